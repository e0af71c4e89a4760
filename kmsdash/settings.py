"""kmsdash settings: one module, read from the environment, working with zero configuration.

Every variable is documented in .env.example and in the README's configuration table.
With nothing set, kmsdash runs on an SQLite file and a broker that needs no server.
"""

from __future__ import annotations

import json
import os
from datetime import time
from pathlib import Path
from typing import Any

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from django.utils.dateparse import parse_time

from kmsdash.roles import ROLES

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.getenv("KMSDASH_VAR_DIR", BASE_DIR / "var"))


def envbool(name: str, default: str) -> bool:
    value = os.getenv(name, default)
    if value not in ("True", "False", "true", "false", "1", "0", ""):
        raise ImproperlyConfigured(f"Unexpected value {name}={value}, use 'True' or 'False'")
    return value in ("True", "true", "1")


def envint(name: str, default: int) -> int:
    value = os.getenv(name, str(default))
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.getenv(name, default).split(",") if item.strip()]


def parse_business_hours(value: str) -> tuple[time, time]:
    """'06:00-23:00' -> (06:00, 23:00): business hours are start <= t < end."""
    try:
        start, end = (parse_time(part.strip()) for part in value.split("-"))
    except ValueError as exc:
        raise ImproperlyConfigured(f"KMSDASH_BUSINESS_HOURS must look like 06:00-23:00, got {value!r}") from exc
    if start is None or end is None:
        raise ImproperlyConfigured(f"KMSDASH_BUSINESS_HOURS must look like 06:00-23:00, got {value!r}")
    if start >= end:
        raise ImproperlyConfigured("KMSDASH_BUSINESS_HOURS must start before it ends")
    return start, end


def read_secret_key() -> str:
    """KMSDASH_SECRET_KEY, else the content of the file KMSDASH_SECRET_KEY_FILE names, else the
    public development key (refused outside the demo and DEBUG: see kmsdash/checks.py)."""
    if value := os.getenv("KMSDASH_SECRET_KEY"):
        return value
    if path := os.getenv("KMSDASH_SECRET_KEY_FILE"):
        try:
            value = Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"KMSDASH_SECRET_KEY_FILE: cannot read {path} ({exc.strerror})") from exc
        if not value:
            raise ImproperlyConfigured(f"KMSDASH_SECRET_KEY_FILE: {path} is empty")
        return value
    return DEVELOPMENT_SECRET_KEY


def read_secret(name: str) -> str:
    """The variable `name`, else the content of the file `name`_FILE names (a mounted secret)."""
    if value := os.getenv(name):
        return value
    if path := os.getenv(f"{name}_FILE"):
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {path} ({exc.strerror})") from exc
    raise ImproperlyConfigured(f"Set {name} or {name}_FILE")


def required(name: str) -> str:
    if not (value := os.getenv(name, "").strip()):
        raise ImproperlyConfigured(f"{name} is required when KMSDASH_OIDC_ENABLED is set")
    return value


def parse_role_map(value: str) -> dict[str, str]:
    """'{"kms-admins": "admin"}' -> {group: role}; every role must be one of kmsdash.roles.ROLES."""
    try:
        mapping = json.loads(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"KMSDASH_OIDC_ROLE_MAP must be a JSON object, got {value!r}") from exc
    if not isinstance(mapping, dict) or not all(isinstance(g, str) and r in ROLES for g, r in mapping.items()):
        raise ImproperlyConfigured(f"KMSDASH_OIDC_ROLE_MAP maps group names to one of {', '.join(ROLES)}")
    return mapping


# --- Core -------------------------------------------------------------------------------------
DEBUG = envbool("KMSDASH_DEBUG", "False")
# Public, so only for the zero-configuration demo and tests on 127.0.0.1. Outside the demo and
# DEBUG, `check --deploy` fails on it and the WSGI application refuses to start (kmsdash/checks.py);
# `make run` generates a key of its own under var/.
DEVELOPMENT_SECRET_KEY = "django-insecure-kmsdash-local-development-only"
SECRET_KEY = read_secret_key()
ALLOWED_HOSTS = envlist("KMSDASH_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = envlist("KMSDASH_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "django_celery_beat",
    "axes",
    "csp",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "kmsdash",
    "audits",
    "costs",
    "notify",
    "inventory",
    "alerts",
    "capacity",
    "access",
    "demo",
]

MIDDLEWARE = [
    # Before anything reads a header: no header value longer than one field (kmsdash/middleware.py).
    "kmsdash.middleware.HeaderSizeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files answer here, before sessions and the login check (whitenoise's documented place).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Cache-Control: private, no-store on every response to a signed-in user.
    "kmsdash.middleware.PrivateCacheMiddleware",
    # Sign-in rules need the user (and OTPMiddleware's is_verified), and must end an idle session and
    # hold back an unverified one before the login check below answers (kmsdash/signin.py).
    "django_otp.middleware.OTPMiddleware",
    "kmsdash.signin.SignInMiddleware",
    # Deny by default: every view needs a login unless marked @login_not_required (htmx-aware).
    "kmsdash.middleware.HtmxLoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "kmsdash.middleware.VaryOnHtmxMiddleware",
    # GET and HEAD read the pages' data from DATABASE_REPLICA_URL when one is set (kmsdash/dbrouter.py).
    "kmsdash.dbrouter.ReplicaReadsMiddleware",
    # After the user and htmx are known, so that its message page renders like any other page.
    "kmsdash.middleware.StatementTimeoutMiddleware",
    # Last, as django-axes asks.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "kmsdash.urls"
WSGI_APPLICATION = "kmsdash.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "kmsdash.context_processors.kmsdash",
                "alerts.context_processors.open_alerts",
            ],
        },
    }
]

# --- Database ---------------------------------------------------------------------------------
# Default engine is SQLite, so a fresh checkout runs with no server at all.
DATABASE_URL = os.getenv("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # WAL lets the web process read while a worker writes; the busy timeout makes writers queue
    # instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
# An optional read replica (PostgreSQL streaming replication) for the pages: GET requests read the
# data apps' tables there; writes, ingestion, sign-in and migrations use the primary (kmsdash/dbrouter.py).
if DATABASE_REPLICA_URL := os.getenv("DATABASE_REPLICA_URL", ""):
    DATABASES["replica"] = dj_database_url.parse(DATABASE_REPLICA_URL, conn_max_age=60, conn_health_checks=True)
    # Tests: the replica alias is the test database itself, as a replica would be.
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["kmsdash.dbrouter.ReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Each web request's SQL statements stop after this long (0: no limit), and the page says so
# (kmsdash/middleware.py). Only requests: ingestion and migrations have no limit.
KMSDASH_STATEMENT_TIMEOUT_MS = envint("KMSDASH_STATEMENT_TIMEOUT_MS", 10_000)
# A CSV export from the web stops after this many rows, and its audit row says it was cut short.
KMSDASH_EXPORT_MAX_ROWS = envint("KMSDASH_EXPORT_MAX_ROWS", 1_000_000)

# --- Auth -------------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    # First: a username under a guessing attack is refused before axes or a password hash is consulted.
    "kmsdash.throttle.UsernameThrottleBackend",
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "start"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
SESSION_COOKIE_SAMESITE = "Lax"
# A session ends after this long without a request from the person (background polls do not count),
# and in any case this long after its login (kmsdash/signin.py). 0 turns the idle limit off.
KMSDASH_SESSION_IDLE_MINUTES = envint("KMSDASH_SESSION_IDLE_MINUTES", 60)
KMSDASH_SESSION_MAX_HOURS = envint("KMSDASH_SESSION_MAX_HOURS", 8)
if KMSDASH_SESSION_IDLE_MINUTES < 0 or KMSDASH_SESSION_MAX_HOURS <= 0:
    raise ImproperlyConfigured("KMSDASH_SESSION_IDLE_MINUTES must be >= 0 and KMSDASH_SESSION_MAX_HOURS > 0")
SESSION_COOKIE_AGE = KMSDASH_SESSION_MAX_HOURS * 3600

# Brute-force protection: lock a (username, IP) pair for an hour after 5 failures.
AXES_FAILURE_LIMIT = envint("KMSDASH_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = 1  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Behind N reverse proxies, the client address is the N-th X-Forwarded-For entry from the right.
KMSDASH_TRUSTED_PROXY_COUNT = envint("KMSDASH_TRUSTED_PROXY_COUNT", 0)
AXES_CLIENT_IP_CALLABLE = "kmsdash.clientip.client_ip"
AXES_LOCKOUT_TEMPLATE = "registration/locked.html"
AXES_VERBOSE = False
# Per username, from any address: the first N failures are free, then each attempt waits twice as
# long as the one before (1 s, 2 s, 4 s, ...) up to a ceiling, so guessing from many addresses is
# slow while the real user is at most that ceiling away from a try. A browser that signed in as the
# user before (a signed cookie) is exempt, so an attacker cannot lock the user out (kmsdash/throttle.py).
KMSDASH_LOGIN_USERNAME_FREE_FAILURES = envint("KMSDASH_LOGIN_USERNAME_FREE_FAILURES", 10)
KMSDASH_LOGIN_USERNAME_MAX_DELAY_SECONDS = envint("KMSDASH_LOGIN_USERNAME_MAX_DELAY_SECONDS", 900)
KMSDASH_KNOWN_BROWSER_DAYS = envint("KMSDASH_KNOWN_BROWSER_DAYS", 90)

# Two-factor authentication (django-otp, TOTP) for local accounts: anyone may enrol; with
# KMSDASH_REQUIRE_2FA, admins must (single sign-on users rely on their identity provider's).
KMSDASH_REQUIRE_2FA = envbool("KMSDASH_REQUIRE_2FA", "False")
OTP_TOTP_ISSUER = os.getenv("KMSDASH_2FA_ISSUER", "kmsdash")
# Each wrong code doubles the wait before the next one is checked (django-otp's throttling).
OTP_TOTP_THROTTLE_FACTOR = 1

# Single sign-on with OpenID Connect (mozilla-django-oidc), off by default; see the README's Sign-in.
KMSDASH_OIDC_ENABLED = envbool("KMSDASH_OIDC_ENABLED", "False")
KMSDASH_OIDC_PROVIDER_NAME = os.getenv("KMSDASH_OIDC_PROVIDER_NAME", "single sign-on")
KMSDASH_OIDC_GROUPS_CLAIM = os.getenv("KMSDASH_OIDC_GROUPS_CLAIM", "groups")
KMSDASH_OIDC_USERNAME_CLAIM = os.getenv("KMSDASH_OIDC_USERNAME_CLAIM", "preferred_username")
KMSDASH_OIDC_CREATE_USERS = envbool("KMSDASH_OIDC_CREATE_USERS", "True")
# {"identity-provider group": "kmsdash role", ...}; a user none of whose groups is mapped is refused.
KMSDASH_OIDC_ROLE_MAP = parse_role_map(os.getenv("KMSDASH_OIDC_ROLE_MAP", "{}"))
if KMSDASH_OIDC_ENABLED:
    OIDC_OP_AUTHORIZATION_ENDPOINT = required("KMSDASH_OIDC_AUTHORIZATION_ENDPOINT")
    OIDC_OP_TOKEN_ENDPOINT = required("KMSDASH_OIDC_TOKEN_ENDPOINT")
    OIDC_OP_USER_ENDPOINT = required("KMSDASH_OIDC_USERINFO_ENDPOINT")
    OIDC_OP_JWKS_ENDPOINT = required("KMSDASH_OIDC_JWKS_ENDPOINT")
    OIDC_RP_CLIENT_ID = required("KMSDASH_OIDC_CLIENT_ID")
    OIDC_RP_CLIENT_SECRET = read_secret("KMSDASH_OIDC_CLIENT_SECRET")
    OIDC_RP_SIGN_ALGO = os.getenv("KMSDASH_OIDC_SIGN_ALGO", "RS256")
    OIDC_RP_SCOPES = os.getenv("KMSDASH_OIDC_SCOPES", "openid email profile groups")
    OIDC_CREATE_USER = KMSDASH_OIDC_CREATE_USERS
    OIDC_USE_PKCE = True
    OIDC_TIMEOUT = 10
    # After the provider: where a login lands, and where a refused one is told why.
    LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/?sso=refused"
    AUTHENTICATION_BACKENDS.append("kmsdash.oidc.RoleMappingOIDCBackend")

# --- Security headers -------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Behind TLS in production (KMSDASH_HTTPS=True): secure cookies, HSTS and the https redirect.
HTTPS = envbool("KMSDASH_HTTPS", "False")
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = 31536000 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
# Load balancers probe /healthz over plain HTTP; a redirect would count as a failed probe. Prometheus
# scrapes each instance directly on the private network, past the TLS-terminating load balancer.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
if envbool("KMSDASH_BEHIND_TLS_PROXY", "False"):
    # Only when the proxy strips a client-supplied X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Content-Security-Policy (django-csp 4). No inline script and no eval: htmx and the strict
# plotly.js bundle are static files of this project. No inline style either: plotly.js's own rules
# are a static stylesheet (templates/_plotly.html, scripts/plotly_css.py), and the project's CSS
# is static/kmsdash/app.css.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# --- i18n / time ------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
USE_I18N = False
USE_TZ = True
# Storage is UTC. KMSDASH_TIME_ZONE decides after-hours and how times are shown.
TIME_ZONE = os.getenv("KMSDASH_TIME_ZONE", "UTC")
KMSDASH_TIME_ZONE = TIME_ZONE
KMSDASH_BUSINESS_HOURS = parse_business_hours(os.getenv("KMSDASH_BUSINESS_HOURS", "06:00-23:00"))
KMSDASH_WEEKENDS_AFTER_HOURS = envbool("KMSDASH_WEEKENDS_AFTER_HOURS", "False")
# kmsdash's own AWS principals (comma-separated IAM role or user ARNs), besides the sources' reader
# roles: a call carrying kmsdash's user agent counts as its own only from one of them
# (audits.cloudtrail.OwnCalls). Without any, the user agent alone decides.
KMSDASH_SELF_PRINCIPALS = envlist("KMSDASH_SELF_PRINCIPALS")

# --- Static -----------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# `collectstatic` (part of `make run` and of every deployment) writes each file here under a
# content-hashed name, with gzip copies; whitenoise serves those with a one-year immutable
# Cache-Control, so a new release is a new URL rather than a stale cache.
STATIC_ROOT = Path(os.getenv("KMSDASH_STATIC_ROOT", BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Ingestion --------------------------------------------------------------------------------
# LookupEvents windows: [checkpoint - overlap, now - settle], at most max_window long.
KMSDASH_LOOKUP_OVERLAP_MINUTES = envint("KMSDASH_LOOKUP_OVERLAP_MINUTES", 15)
KMSDASH_LOOKUP_SETTLE_MINUTES = envint("KMSDASH_LOOKUP_SETTLE_MINUTES", 5)
# A window is read whole within one task (at most CELERY_TASK_SOFT_TIME_LIMIT x 2 requests/s x 50
# events: 144,000 with the defaults, so a scope with more than ~30 KMS calls/s needs shorter windows,
# or the S3 source). Each window re-reads the overlap, so it must be longer than that to progress.
KMSDASH_LOOKUP_MAX_WINDOW_MINUTES = envint("KMSDASH_LOOKUP_MAX_WINDOW_MINUTES", 60)
if KMSDASH_LOOKUP_MAX_WINDOW_MINUTES <= KMSDASH_LOOKUP_OVERLAP_MINUTES:
    raise ImproperlyConfigured("KMSDASH_LOOKUP_MAX_WINDOW_MINUTES must be longer than KMSDASH_LOOKUP_OVERLAP_MINUTES")
# How far back the first LookupEvents run reaches (LookupEvents keeps 90 days).
KMSDASH_LOOKUP_INITIAL_DAYS = envint("KMSDASH_LOOKUP_INITIAL_DAYS", 1)
# AWS's fixed limit is 2 LookupEvents requests/s per account and region.
KMSDASH_LOOKUP_RATE_PER_SECOND = float(os.getenv("KMSDASH_LOOKUP_RATE_PER_SECOND", "2"))
# S3 log files: days re-listed behind the window for late deliveries (CloudTrail redelivers
# for up to 30 days after an outage).
KMSDASH_S3_LOOKBACK_DAYS = envint("KMSDASH_S3_LOOKBACK_DAYS", 2)
KMSDASH_S3_INITIAL_DAYS = envint("KMSDASH_S3_INITIAL_DAYS", 1)
# A scheduled S3 pass is read by many workers (audits/sources/s3.py): the listing task makes one
# ObjectClaim per object to read and queues FANOUT_TASKS read tasks; each takes CLAIM_BATCH objects at
# a time under a lease of LEASE_SECONDS (renewed while it reads), and an expired lease (a worker that
# died) lets another worker take its objects.
KMSDASH_S3_CLAIM_BATCH = envint("KMSDASH_S3_CLAIM_BATCH", 8)
KMSDASH_S3_LEASE_SECONDS = envint("KMSDASH_S3_LEASE_SECONDS", 600)
KMSDASH_S3_FANOUT_TASKS = envint("KMSDASH_S3_FANOUT_TASKS", 8)
# Decompression-bomb guard: CloudTrail files are at most 50 MB compressed.
KMSDASH_MAX_COMPRESSED_BYTES = envint("KMSDASH_MAX_COMPRESSED_BYTES", 64 * 1024 * 1024)
KMSDASH_MAX_DECOMPRESSED_BYTES = envint("KMSDASH_MAX_DECOMPRESSED_BYTES", 1024 * 1024 * 1024)
KMSDASH_MAX_RECORD_BYTES = envint("KMSDASH_MAX_RECORD_BYTES", 512 * 1024)
KMSDASH_OBJECT_ATTEMPTS = envint("KMSDASH_OBJECT_ATTEMPTS", 3)
# Events per ingest transaction. A batch holds its records' JSON text until the writer compresses
# it, so memory follows the size while speed barely does, and storage not at all (the README's
# benchmarks give the figures).
KMSDASH_INGEST_BATCH_SIZE = envint("KMSDASH_INGEST_BATCH_SIZE", 10000)
# Days of events kept for the explorer and the raw-record drawer (0: all). Counts come from rollups,
# which are never purged; critical key-management events are kept for good (audits/retention.py).
KMSDASH_EVENT_RETENTION_DAYS = envint("KMSDASH_EVENT_RETENTION_DAYS", 0)
if KMSDASH_EVENT_RETENTION_DAYS < 0:
    raise ImproperlyConfigured("KMSDASH_EVENT_RETENTION_DAYS must be 0 (keep all) or a number of days")
KMSDASH_LOCK_DIR = VAR_DIR / "locks"
# PostgreSQL only: events and raw blocks partitioned by UTC day (audits/partitions.py), so retention
# drops whole days; "off" keeps one table each. Read by the migration that converts the tables (and
# by `manage.py event_partitions`); SQLite is never partitioned.
KMSDASH_EVENT_PARTITIONS = os.environ.get("KMSDASH_EVENT_PARTITIONS", "daily").strip().lower() or "daily"
if KMSDASH_EVENT_PARTITIONS not in ("daily", "off"):
    raise ImproperlyConfigured("KMSDASH_EVENT_PARTITIONS must be daily or off")

# --- Costs ------------------------------------------------------------------------------------
# Cost Explorer metric read as "the cost": UnblendedCost, BlendedCost, AmortizedCost, NetUnblendedCost.
KMSDASH_COST_METRIC = os.getenv("KMSDASH_COST_METRIC", "UnblendedCost")
if KMSDASH_COST_METRIC not in ("UnblendedCost", "BlendedCost", "AmortizedCost", "NetUnblendedCost"):
    raise ImproperlyConfigured(f"Unsupported KMSDASH_COST_METRIC {KMSDASH_COST_METRIC!r}")
# Merged over costs/prices.py DEFAULT_PRICES, as JSON: '{"symmetric": "0.00000315"}'.
KMSDASH_PRICES = json.loads(os.getenv("KMSDASH_PRICES", "{}"))
# Savings finder: share of GenerateDataKey/Decrypt calls a data-key cache would answer.
KMSDASH_DATA_KEY_CACHE_HIT_RATE = float(os.getenv("KMSDASH_DATA_KEY_CACHE_HIT_RATE", "0.9"))
KMSDASH_IDLE_KEY_DAYS = envint("KMSDASH_IDLE_KEY_DAYS", 90)
# Cost Explorer bills $0.01 a request: runs stop being started once a UTC day's requests reach this.
KMSDASH_CE_DAILY_REQUEST_BUDGET = envint("KMSDASH_CE_DAILY_REQUEST_BUDGET", 200)

# --- Alert delivery (notify/) ----------------------------------------------------------------
# At most this many notifications per alert and channel in any hour; the excess is recorded as
# suppressed (a resolution always goes out).
KMSDASH_ALERT_MAX_NOTIFICATIONS_PER_HOUR = envint("KMSDASH_ALERT_MAX_NOTIFICATIONS_PER_HOUR", 4)
# One delivery attempt may take this long (connect and read) before it counts as failed.
KMSDASH_ALERT_DELIVERY_TIMEOUT = envint("KMSDASH_ALERT_DELIVERY_TIMEOUT", 10)
# A worker claims a delivery for this long; if it dies mid-attempt, another takes it over after.
KMSDASH_ALERT_DELIVERY_LEASE_SECONDS = envint("KMSDASH_ALERT_DELIVERY_LEASE_SECONDS", 120)
if KMSDASH_ALERT_DELIVERY_LEASE_SECONDS <= 2 * KMSDASH_ALERT_DELIVERY_TIMEOUT:
    # A lease shorter than an attempt would let a second worker send while the first still waits.
    raise ImproperlyConfigured("KMSDASH_ALERT_DELIVERY_LEASE_SECONDS must exceed twice KMSDASH_ALERT_DELIVERY_TIMEOUT")
# Retries: exponential from the first delay, capped, with jitter; given up after this many hours.
KMSDASH_ALERT_RETRY_FIRST_SECONDS = envint("KMSDASH_ALERT_RETRY_FIRST_SECONDS", 30)
KMSDASH_ALERT_RETRY_MAX_SECONDS = envint("KMSDASH_ALERT_RETRY_MAX_SECONDS", 3600)
KMSDASH_ALERT_DELIVERY_HOURS = envint("KMSDASH_ALERT_DELIVERY_HOURS", 24)
# Alert pages are linked from messages as this origin + the alert's path (e.g. https://kmsdash.example.com).
KMSDASH_BASE_URL = os.getenv("KMSDASH_BASE_URL", "").rstrip("/")
# KMS key (id, ARN or alias) that envelope-encrypts channel secrets stored in the database.
KMSDASH_SECRETS_KMS_KEY = os.getenv("KMSDASH_SECRETS_KMS_KEY", "")


# Email channels go through Django's email backend; KMSDASH_EMAIL_* wins over the standard names.
def _email(name: str, default: str = "") -> str:
    return os.getenv(f"KMSDASH_{name}", os.getenv(name, default))


EMAIL_BACKEND = _email("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = _email("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("KMSDASH_EMAIL_PORT", int(os.getenv("EMAIL_PORT", "25")))
EMAIL_HOST_USER = _email("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = _email("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = envbool("KMSDASH_EMAIL_USE_TLS", os.getenv("EMAIL_USE_TLS", "False"))
EMAIL_USE_SSL = envbool("KMSDASH_EMAIL_USE_SSL", os.getenv("EMAIL_USE_SSL", "False"))
EMAIL_TIMEOUT = KMSDASH_ALERT_DELIVERY_TIMEOUT
EMAIL_FILE_PATH = _email("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = _email("DEFAULT_FROM_EMAIL", "kmsdash@localhost")

# --- Inventory and findings -------------------------------------------------------------------
# Encryption-context rules are checked against the events of the last N days (at most M events a key).
KMSDASH_EC_RULE_DAYS = envint("KMSDASH_EC_RULE_DAYS", 30)
KMSDASH_EC_RULE_MAX_EVENTS = envint("KMSDASH_EC_RULE_MAX_EVENTS", 200_000)
if 0 < KMSDASH_EVENT_RETENTION_DAYS <= KMSDASH_EC_RULE_DAYS:
    # The rules read events, and purged days would pass for days without violations.
    raise ImproperlyConfigured("KMSDASH_EVENT_RETENTION_DAYS must be longer than KMSDASH_EC_RULE_DAYS")


# --- Capacity (request quotas) ----------------------------------------------------------------
def parse_kms_quotas(value: str) -> dict[tuple[str, str, str], float]:
    """KMSDASH_KMS_QUOTAS, refused at start-up with the bad entry named (capacity/quotas.py)."""
    from capacity.quotas import QuotaConfigError, parse_overrides

    try:
        return parse_overrides(value)
    except QuotaConfigError as exc:
        raise ImproperlyConfigured(str(exc)) from exc


# Raised KMS request quotas, requests/s: '{"111122223333:eu-west-1:symmetric": 25000}' (account or region *).
KMSDASH_KMS_QUOTAS = parse_kms_quotas(os.getenv("KMSDASH_KMS_QUOTAS", ""))

# "Safe to delete?" (inventory/retirement.py). A customer managed key used successfully (CloudTrail or
# GetKeyLastUsage) in the last IN_USE days is `in-use`; used earlier but within the look-back WINDOW,
# `recently-used`; not used in the window, `no-recent-use`, or `safe-to-schedule` when nothing else
# stands in the way (no referencing resource, every service checked, CloudTrail data covering the
# whole window). The window defaults to 90 days, CloudTrail's own event history.
KMSDASH_RETIREMENT_WINDOW_DAYS = envint("KMSDASH_RETIREMENT_WINDOW_DAYS", 90)
KMSDASH_RETIREMENT_IN_USE_DAYS = envint("KMSDASH_RETIREMENT_IN_USE_DAYS", 7)
if not 1 <= KMSDASH_RETIREMENT_IN_USE_DAYS < KMSDASH_RETIREMENT_WINDOW_DAYS:
    raise ImproperlyConfigured(
        "KMSDASH_RETIREMENT_IN_USE_DAYS must be at least 1 and shorter than KMSDASH_RETIREMENT_WINDOW_DAYS"
    )

# --- Alerts -----------------------------------------------------------------------------------
# Baselines are the N days before the judged hour; a scope with less than M days of activity in
# them before it is not judged (a first import does not alert on everything).
KMSDASH_ALERT_BASELINE_DAYS = envint("KMSDASH_ALERT_BASELINE_DAYS", 14)
KMSDASH_ALERT_MIN_HISTORY_DAYS = envint("KMSDASH_ALERT_MIN_HISTORY_DAYS", 7)
# An alert whose condition has not recurred for this long resolves itself (a rule may override it).
KMSDASH_ALERT_RESOLVE_HOURS = float(os.getenv("KMSDASH_ALERT_RESOLVE_HOURS", "24"))
# How long an evaluation waits for the ingest batches in flight to commit before trying next time.
KMSDASH_ALERT_LOCK_WAIT_SECONDS = float(os.getenv("KMSDASH_ALERT_LOCK_WAIT_SECONDS", "30"))
if KMSDASH_ALERT_MIN_HISTORY_DAYS > KMSDASH_ALERT_BASELINE_DAYS:
    raise ImproperlyConfigured("KMSDASH_ALERT_MIN_HISTORY_DAYS must not be longer than KMSDASH_ALERT_BASELINE_DAYS")

# --- Monitoring -------------------------------------------------------------------------------
# /metrics (Prometheus text format) answers only `Authorization: Bearer <this>`; unset, it is 404.
KMSDASH_METRICS_TOKEN = os.getenv("KMSDASH_METRICS_TOKEN", "") or (
    read_secret("KMSDASH_METRICS_TOKEN") if os.getenv("KMSDASH_METRICS_TOKEN_FILE") else ""
)

# Demo mode: set by the run script when no AWS credentials are configured; the banner says so.
KMSDASH_DEMO = envbool("KMSDASH_DEMO", "False")

# --- Celery -----------------------------------------------------------------------------------
# The default broker needs no server (files under var/), so the zero-configuration run works
# without Redis. Production: redis://... or amqp://...
CELERY_BROKER_URL = os.getenv("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(VAR_DIR / "broker-processed"),
        "store_processed": False,
        # Else kombu writes its broadcast exchange table to ./control in the working directory.
        "control_folder": str(VAR_DIR / "broker-control"),
    }
else:
    # A task not acknowledged within the visibility timeout is redelivered; the hard time limit
    # below stays well under it so a live task is never delivered twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 7200}
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = envint("KMSDASH_TASK_TIME_LIMIT", 1800)
CELERY_TASK_SOFT_TIME_LIMIT = int(CELERY_TASK_TIME_LIMIT * 0.8)
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    # Every 5 minutes; a run not started within the period is dropped, not piled up.
    "cloudtrail-lookup": {
        "task": "audits.tasks.schedule_lookup",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 290},
    },
    "cloudtrail-s3": {
        "task": "audits.tasks.schedule_s3",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 290},
    },
    # Cost Explorer data changes at most three times a day; each request costs $0.01.
    "cost-explorer": {
        "task": "costs.tasks.ingest_costs",
        "schedule": crontab(minute=7, hour="*/8"),
        "options": {"expires": 3600},
    },
    # The day partitions of the coming week, on PostgreSQL with partitioned events (audits/partitions.py);
    # a day without one still takes events (its default partition).
    "event-partitions": {
        "task": "audits.tasks.ensure_event_partitions",
        "schedule": crontab(minute=20, hour="*/6"),
        "options": {"expires": 3600},
    },
    # Once a day: each purge step is one UTC day of events (audits/retention.py).
    "event-retention": {
        "task": "audits.tasks.purge_events",
        "schedule": crontab(minute=40, hour=3),
        "options": {"expires": 3600},
    },
    # Also queued after every ingestion run that added events; this catches findings, quiet alerts
    # to resolve and snoozes that ended.
    "alerts-evaluate": {
        "task": "alerts.tasks.evaluate_alerts",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 290},
    },
    "kms-inventory": {
        "task": "inventory.tasks.schedule_inventory",
        "schedule": crontab(minute=15, hour="*"),
        "options": {"expires": 3000},
    },
    # IAM beside the inventory, so that the access analysis joins policies read at the same time.
    "iam-authorization": {
        "task": "access.tasks.schedule_iam",
        "schedule": crontab(minute=15, hour="*"),
        "options": {"expires": 3000},
    },
    # Alert deliveries are also queued as soon as they are recorded; this pass picks up retries
    # and anything whose message was lost (the database is the queue).
    "alert-deliveries": {
        "task": "notify.tasks.deliver_alerts",
        "schedule": crontab(minute="*"),
        "options": {"expires": 55},
    },
}

# --- Logging ----------------------------------------------------------------------------------
# One JSON object a line, so attacker-chosen text from CloudTrail can never forge a log line;
# a call's `extra={...}` fields become fields of its line (python-json-logger).
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "{levelname}{name}{message}",
            "style": "{",
            "rename_fields": {"levelname": "level", "name": "logger", "exc_info": "exc"},
            "timestamp": "time",
            # Every non-ASCII character escaped too: U+2028, U+0085 and friends end a line for
            # some log readers, so only \n-free ASCII guarantees one record a line.
            "json_ensure_ascii": True,
        }
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": os.getenv("KMSDASH_LOG_LEVEL", "INFO")},
    "loggers": {
        "botocore": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
    },
}
