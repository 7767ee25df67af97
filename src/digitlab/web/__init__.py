"""The web app: draw a digit in the browser and see what the model reads (`digitlab serve`).

`digitlab.web.app.create_app` builds the FastAPI app (its docstring maps the modules:
routes, service, models, bodies, docs); the drawings users correct go to
`digitlab.corrections`, below every front end. Imported lazily by the CLI: FastAPI is only
loaded when the app runs.
"""
