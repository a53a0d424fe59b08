#!/usr/bin/env bash
# Source this: installs (apt, as root) and starts the real servers the tests use, on 127.0.0.1.
#   PostgreSQL -> exports LABELLOOP_TEST_POSTGRES_URL
#   dcmtk (storescu, echoscu, storescp) and Orthanc + DICOMweb are started by the tests themselves.
#   redis-server (the remote-worker job queue test) likewise.
#   chromium (+ chromium-driver for Selenium): the browser tests (/docs, the dashboard, OHIF).
#   docker-compose: validates docker/compose.yaml (`config` needs no Docker engine).
# Without root or apt the tests that need them skip with a reason.
_ll_apt_packages="postgresql dcmtk orthanc orthanc-dicomweb redis-server chromium chromium-driver docker-compose"
_ll_need=""
for p in $_ll_apt_packages; do
  dpkg -s "$p" >/dev/null 2>&1 || _ll_need="$_ll_need $p"
done
if [ -n "$_ll_need" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing from apt:$_ll_need"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq $_ll_need >/dev/null
  else
    echo "note: not root or no apt-get; missing:$_ll_need (those tests will skip)"
  fi
fi
_ll_pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -n "$_ll_pgbin" ] && [ -x "$_ll_pgbin/initdb" ] && id postgres >/dev/null 2>&1; then
  LL_PG_DIR=$(mktemp -d /tmp/labelloop-pg.XXXXXX)
  chown postgres "$LL_PG_DIR"
  LL_PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  if su postgres -c "cd / && $_ll_pgbin/initdb -D $LL_PG_DIR/data -A trust -U postgres" >/dev/null \
     && su postgres -c "cd / && $_ll_pgbin/pg_ctl -D $LL_PG_DIR/data -o '-k $LL_PG_DIR -h 127.0.0.1 -p $LL_PG_PORT' -l $LL_PG_DIR/log -w start" >/dev/null; then
    export LABELLOOP_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$LL_PG_PORT/postgres"
    export LL_PG_DIR _ll_pgbin
    echo "PostgreSQL on 127.0.0.1:$LL_PG_PORT"
  else
    echo "note: PostgreSQL did not start (see $LL_PG_DIR/log); PostgreSQL tests will skip"
  fi
fi
ll_stop_servers() {
  if [ -n "${LL_PG_DIR:-}" ]; then
    su postgres -c "$_ll_pgbin/pg_ctl -D $LL_PG_DIR/data -m fast stop" >/dev/null 2>&1 || true
    rm -rf "$LL_PG_DIR"
  fi
}
