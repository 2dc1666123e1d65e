#!/bin/sh
# docker-entrypoint.sh - the example image's entry point (contrib/Dockerfile):
#
#   1. start the built-in databases on the ports switchyard's default configuration routes
#      to: Postgres on 127.0.0.1:5433, Redis redis-store on 6381 and redis-cache on 6382;
#   2. exec `switchyard run -- "$@"`: switchyard takes 5432/6379/6380 with the real targets
#      from this environment (PGHOST, PGPASSWORD, REDIS_ENDPOINT, ...), waits until it
#      listens, and runs the application with PGHOST=127.0.0.1, PGPORT=5432, no password,
#      REDIS_ENDPOINT=127.0.0.1:6379 and so on. It stays PID 1: signals reach the
#      application, orphans are reaped, the application's exit status is the container's.
#
# `switchyard run --dry-run -- "$@"` prints what the application will see.
set -eu

PGBIN=/usr/lib/postgresql/15/bin
PGDATA=${PGDATA:-/var/lib/postgresql/data}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	install -d -o postgres -g postgres -m 0700 "$PGDATA"
	runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" --auth=trust --username=postgres >/dev/null
fi
install -d -o postgres -g postgres /run/postgresql
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -w -l "$PGDATA/server.log" \
	-o "-c listen_addresses=127.0.0.1 -c port=5433 -c unix_socket_directories=/run/postgresql" start
for db in sourcegraph sourcegraph-codeintel sourcegraph-codeinsights; do
	runuser -u postgres -- "$PGBIN/psql" -h /run/postgresql -p 5433 -qtAc \
		"SELECT 1 FROM pg_database WHERE datname = '$db'" postgres | grep -q 1 ||
		runuser -u postgres -- "$PGBIN/createdb" -h /run/postgresql -p 5433 "$db"
done

install -d -o redis -g redis /var/lib/redis
for port in 6381 6382; do
	runuser -u redis -- redis-server --bind 127.0.0.1 --port "$port" --dir /var/lib/redis \
		--dbfilename "dump-$port.rdb" --daemonize yes --logfile "/var/lib/redis/redis-$port.log"
done

# switchyard's defaults are the container layout above (conf/switchyard.conf).
exec switchyard run --config /etc/switchyard/switchyard.conf -- "$@"
