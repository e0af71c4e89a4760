"""gunicorn's settings for kmsdash, from the environment: `gunicorn -c gunicorn.conf.py kmsdash.wsgi`.

`make run` uses this file, and so should every deployment (gunicorn also reads it by itself when
started from the project directory). See the README's configuration table.
"""

import os


def envint(name: str, default: int) -> int:
    value = os.getenv(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {value!r}") from None


bind = [os.getenv("KMSDASH_WEB_BIND", "127.0.0.1:8000")]
# Two cores: two processes (one can crash or stall without the other), each with threads for the
# requests that wait on the database or stream a CSV export. `threads` > 1 selects gthread workers.
workers = envint("KMSDASH_WEB_WORKERS", 2)
threads = envint("KMSDASH_WEB_THREADS", 4)
timeout = envint("KMSDASH_WEB_TIMEOUT", 60)
graceful_timeout = 20
# Load the application once in the master: a configuration error (such as the public secret key,
# kmsdash/checks.py) stops the server at once with one message, instead of in every worker.
preload_app = True

# Request size limits, so no single request can make the interpreter parse much: Django's cookie
# parser was quadratic in backslashes before CVE-2024-7592 was fixed (scripts/lib.sh refuses such
# an interpreter), and 32 fields of at most 8 KiB bound every header parser's input. A larger
# request gets 431 (414 for the request line) from gunicorn before Django sees it.
limit_request_line = 4094
limit_request_fields = 32
limit_request_field_size = 8190

# Django alone decides what a forwarded header means (KMSDASH_BEHIND_TLS_PROXY,
# KMSDASH_TRUSTED_PROXY_COUNT): gunicorn trusts no forwarding headers from any address.
forwarded_allow_ips = ""

# No control socket: gunicorn's default path ($HOME/.gunicorn/gunicorn.ctl) is one per user, so a
# second server on the machine (another checkout, the test suite) would take it over.
control_socket_disable = True

# The application logs JSON lines itself; gunicorn's own messages go to stderr.
errorlog = "-"
loglevel = os.getenv("KMSDASH_LOG_LEVEL", "INFO").lower()
