# Shared by the demo scripts (sourced, not run): step headings with the time
# each step took, and a private docker-registry on 127.0.0.1.

now() { date +%s%N; }
ms() { echo $(( ($(now) - $1) / 1000000 )); }
DEMO_T0=$(now)
STEP_T=
step() {
  if [ -n "$STEP_T" ]; then printf '\033[2m   (step: %s ms)\033[0m\n' "$(ms "$STEP_T")"; fi
  STEP_T=$(now)
  printf '\n\033[1m== %s\033[0m\n' "$*"
}

# A free TCP port on 127.0.0.1 (printed).
free_port() {
  local p
  for p in $(shuf -i 20000-60000 -n 50); do
    (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  echo "no free port found" >&2
  return 1
}

# start_registry DIR PORT: docker-registry on 127.0.0.1:PORT, storage, config
# and log under DIR; sets REG_PID and waits until it answers (5 s at most).
start_registry() {
  cat > "$1/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $1/registry
http:
  addr: 127.0.0.1:$2
log:
  level: error
YML
  docker-registry serve "$1/registry.yml" >"$1/registry.log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$2/v2/" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "docker-registry did not start:" >&2; cat "$1/registry.log" >&2
  return 1
}
