#!/bin/bash
# InfluxDB's users for the tick-exporter stack, from .env (docs/deploy.md, "Security"):
#   admin      INFLUXDB_ADMIN_USER (admin)       all privileges: you, and this script
#   agents     INFLUXDB_AGENT_USER (tick-agent)  WRITE on INFLUXDB_DB: every tick-exporter
#                                                and Telegraf; cannot read anything
#   Grafana    INFLUXDB_GRAFANA_USER (grafana)   READ on INFLUXDB_DB: Grafana, Chronograf
#   Kapacitor  INFLUXDB_KAPACITOR_USER (kapacitor) admin: InfluxDB 1.x lets only an admin
#                                                run CREATE SUBSCRIPTION, which Kapacitor
#                                                does at every start (docs/alerts.md)
# and the database INFLUXDB_DB (tick). Each *_PASSWORD must be set, and not the
# placeholder "change-me" of .env.example: the script refuses before changing anything.
#
# Idempotent: run again after changing .env, it creates what is missing, sets every
# password to the one in .env and the privileges to exactly the above.
#   docker-compose exec influxdb bash /docker-entrypoint-initdb.d/tick-users.sh
# The influxdb image runs it on first start (its init-influxdb.sh sources every *.sh in
# /docker-entrypoint-initdb.d after creating INFLUXDB_ADMIN_USER, against a temporary
# influxd on 127.0.0.1:8086). With no admin yet (another image, Debian's influxd) it
# creates the admin itself: InfluxDB 1.x accepts that one statement unauthenticated.
#
#   tick-users.sh --check   exit 0 when the passwords are real and every user exists
#                           (the compose healthcheck: the stack waits on it)
# TICK_INFLUX_HOST / TICK_INFLUX_PORT: where InfluxDB listens (127.0.0.1:8086).

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced by the image's init script (set -e there): run in a shell of our own, so
    # our variables and options stay ours, and a refusal fails the first start.
    bash "${BASH_SOURCE[0]}" || exit 1
    return 0
fi
set -euo pipefail

host=${TICK_INFLUX_HOST:-127.0.0.1}
port=${TICK_INFLUX_PORT:-8086}
db=${INFLUXDB_DB:-tick}
admin=${INFLUXDB_ADMIN_USER:-admin}
agent=${INFLUXDB_AGENT_USER:-tick-agent}
grafana=${INFLUXDB_GRAFANA_USER:-grafana}
kapacitor=${INFLUXDB_KAPACITOR_USER:-kapacitor}

say() { echo "tick-users: $*" >&2; }
refuse() { say "$*"; exit 1; }

for var in INFLUXDB_ADMIN_PASSWORD INFLUXDB_AGENT_PASSWORD INFLUXDB_GRAFANA_PASSWORD INFLUXDB_KAPACITOR_PASSWORD; do
    value=${!var:-}
    [ -n "$value" ] || refuse "$var is not set: set it in .env (see .env.example)"
    [ "$value" != "change-me" ] || refuse "$var is still the placeholder \"change-me\" from .env.example: set a password of your own in .env"
done
case $INFLUXDB_ADMIN_PASSWORD in
    # The influxdb image's own init (init-influxdb.sh) puts it between single quotes
    # unescaped and on a command line unquoted: its first start would fail with only
    # "influxdb init process failed".
    *"'"*|*'\'*|*[[:space:]]*) refuse "INFLUXDB_ADMIN_PASSWORD may not hold ', \\ or spaces (the influxdb image's init uses it as is)";;
esac
for name in "$db" "$admin" "$agent" "$grafana" "$kapacitor"; do
    case $name in *'"'*|*'\'*|'') refuse "user and database names may not be empty or hold \" or \\: \"$name\"";; esac
done

# influx reads the credentials from INFLUX_USERNAME/INFLUX_PASSWORD, so they never show
# on a command line (ps).
as_admin() { INFLUX_USERNAME=$admin INFLUX_PASSWORD=$INFLUXDB_ADMIN_PASSWORD influx -host "$host" -port "$port" "$@"; }
anonymous() { env -u INFLUX_USERNAME -u INFLUX_PASSWORD influx -host "$host" -port "$port" "$@"; }
run() { as_admin -execute "$1" >/dev/null || refuse "InfluxDB refused: ${1%%WITH PASSWORD*}"; }
# An InfluxQL string literal: backslash and single quote escaped.
quoted() { local s=${1//\\/\\\\}; printf "'%s'" "${s//\'/\\\'}"; }
users() { as_admin -format csv -execute "SHOW USERS" | tail -n +2 | cut -d, -f1; }

if [ "${1:-}" = "--check" ]; then
    listed=$(users) || refuse "the admin $admin cannot log in"
    for user in "$agent" "$grafana" "$kapacitor"; do
        grep -qxF "$user" <<<"$listed" || refuse "user $user missing: run tick-users.sh"
    done
    exit 0
fi

if ! listed=$(users 2>/dev/null); then
    # No admin yet (the only state in which InfluxDB takes this unauthenticated), or
    # an admin whose password is not the one in .env.
    anonymous -execute "CREATE USER \"$admin\" WITH PASSWORD $(quoted "$INFLUXDB_ADMIN_PASSWORD") WITH ALL PRIVILEGES" >/dev/null 2>&1 \
        || refuse "the admin $admin cannot log in with INFLUXDB_ADMIN_PASSWORD, and InfluxDB already has an admin"
    say "created the admin $admin"
    listed=$(users)
fi

ensure_user() {  # name password
    if grep -qxF "$1" <<<"$listed"; then
        run "SET PASSWORD FOR \"$1\" = $(quoted "$2")"
    else
        run "CREATE USER \"$1\" WITH PASSWORD $(quoted "$2")"
        say "created the user $1"
    fi
}

run "CREATE DATABASE \"$db\""
ensure_user "$agent" "$INFLUXDB_AGENT_PASSWORD"
run "REVOKE ALL PRIVILEGES FROM \"$agent\""         # never an admin
run "GRANT WRITE ON \"$db\" TO \"$agent\""          # replaces any READ or ALL
ensure_user "$grafana" "$INFLUXDB_GRAFANA_PASSWORD"
run "REVOKE ALL PRIVILEGES FROM \"$grafana\""
run "GRANT READ ON \"$db\" TO \"$grafana\""
ensure_user "$kapacitor" "$INFLUXDB_KAPACITOR_PASSWORD"
run "GRANT ALL PRIVILEGES TO \"$kapacitor\""
say "users $agent (write), $grafana (read), $kapacitor (admin) ready on database $db"
