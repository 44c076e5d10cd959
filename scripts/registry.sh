# A private docker-registry on 127.0.0.1 for the demos and the benchmarks
# (sourced, not run). Defines free_port and start_registry; the caller stops
# REG_PID when it is done.

# A free TCP port on 127.0.0.1 (printed).
free_port() {
  local p
  for p in $(shuf -i 20000-60000 -n 50); do
    (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  echo "no free port found" >&2
  return 1
}

# start_registry DIR [PORT]: docker-registry on 127.0.0.1:PORT (without PORT,
# on a free port, trying up to 10 in case another process takes one first),
# with its storage, config and log under DIR and no access log. Sets REG_PID
# and REG_PORT once it answers (10 s at most per try); else prints its log
# and returns 1.
start_registry() {
  local dir=$1 port try i
  for try in $(seq 10); do
    port=${2:-$(free_port)} || return 1
    cat >"$dir/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/registry
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: sealpod-local
YML
    docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
    REG_PID=$!
    for i in $(seq 100); do
      if curl -fs -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null && kill -0 "$REG_PID" 2>/dev/null; then
        REG_PORT=$port
        return 0
      fi
      kill -0 "$REG_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill "$REG_PID" 2>/dev/null || true
    wait "$REG_PID" 2>/dev/null || true
    REG_PID=
    [ -z "${2:-}" ] || break
  done
  echo "docker-registry did not start:" >&2
  cat "$dir/registry.log" >&2 || true
  return 1
}
