"""orderwait: tells a browser the moment its payment finishes.

Importing the package loads nothing else, so gunicorn's master process can load the worker
class (app/server.py) without Flask: the worker patches the standard library with gevent
first, then builds the application.
"""


def create_app(*args, **overrides):
    """The Flask application (app/factory.py)."""
    from app.factory import create_app as build

    return build(*args, **overrides)
