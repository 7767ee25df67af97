"""The web app: draw a digit in the browser and see what the model reads (`digitlab serve`).

`digitlab.web.app.create_app` builds the FastAPI app (its docstring maps the modules:
routes, service, models, bodies, docs); `digitlab.web.corrections` stores the drawings
users correct. Imported lazily by the CLI: FastAPI is only loaded when the app runs.
"""
