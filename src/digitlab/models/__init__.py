"""Model families: the classical scikit-learn zoo (`classical`) and the CNN (`cnn`)."""
