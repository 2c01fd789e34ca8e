#!/usr/bin/env bash
# Start the team's MLflow tracking server (docs/team-setup.md). Clients need only
# MLFLOW_TRACKING_URI=http://HOST:PORT: runs go to the backend store, artifacts are proxied.
#
#   HOST, PORT                    bind address (default 127.0.0.1:5000: loopback only)
#   MLFLOW_BACKEND_STORE_URI      runs and registry (default sqlite:///<repo>/mlflow.db;
#                                 teams: postgresql+psycopg2://user@dbhost:5432/mlflow)
#   MLFLOW_ARTIFACTS_DESTINATION  where the server keeps artifacts (default <repo>/mlartifacts)
#   POLYFIT_AUTH=1                basic auth; needs MLFLOW_FLASK_SERVER_SECRET_KEY, and
#                                 MLFLOW_AUTH_ADMIN_PASSWORD on the first start
#   POLYFIT_AUTH_DIR              auth config and user database, outside git
#                                 (default ~/.local/state/polyfit)
#   POLYFIT_AUTH_DATABASE_URI     user database (default sqlite:///<auth dir>/basic_auth.db)
#   POLYFIT_AUTH_DEFAULT_PERMISSION  on experiments a user did not create (default READ)
# Extra arguments go to `mlflow server`, e.g. `bash scripts/server.sh --workers 2`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$repo/.venv/bin:$PATH"
# Server-side jobs serve MLflow's GenAI features, unused here; they add three worker pools and
# double the start-up time. MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true brings them back.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

args=(
  --host "${HOST:-127.0.0.1}"
  --port "${PORT:-5000}"
  --backend-store-uri "${MLFLOW_BACKEND_STORE_URI:-sqlite:///$repo/mlflow.db}"
  # Proxied artifacts: clients upload through the server, so they need no storage access.
  --serve-artifacts
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-$repo/mlartifacts}"
)

if [[ "${POLYFIT_AUTH:-0}" == 1 ]]; then
  : "${MLFLOW_FLASK_SERVER_SECRET_KEY:?must be set for basic auth (a long random string)}"
  state="${POLYFIT_AUTH_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/polyfit}"
  mkdir -p "$state"
  chmod 700 "$state"
  # MLflow's bundled ini puts the user database in ./basic_auth.db, inside the repo: write our
  # own. It holds no secret: MLflow reads the admin password from MLFLOW_AUTH_ADMIN_PASSWORD.
  export MLFLOW_AUTH_CONFIG_PATH="$state/basic_auth.ini"
  cat >"$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = ${POLYFIT_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${POLYFIT_AUTH_DATABASE_URI:-sqlite:///$state/basic_auth.db}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
  args+=(--app-name basic-auth)
fi

exec mlflow server "${args[@]}" "$@"
