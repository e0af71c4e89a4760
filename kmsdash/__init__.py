from .celery import app as celery_app

# Sent in the user agent of every AWS call (kmsdash/aws.py), so that its own calls can be told apart.
__version__ = "0.1.0"

__all__ = ("celery_app",)
