#!/usr/bin/env bash
# The main job, end to end on this machine (as root): the confidential pod
# flow. A private registry on 127.0.0.1; a busybox image built with umoci and
# pushed with skopeo plain, encrypted by `skopeo copy --encryption-key` and
# encrypted for a KBS key (the Confidential Containers kbs:/// wrapping);
# image-rs pulls, verifies and decrypts; dev-kbs releases keys only after
# attestation; guest-agent (initdata with the pod's policy and KBS, sample
# TEE) runs the containers that agentctl asks for, and refuses what the
# policy does not allow. Prints each step and its time; cleans up after
# itself. `./scripts/demo.sh vm` runs the same flow in a qemu VM over vsock.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ "${1:-}" = vm ]; then
  exec scripts/demo-vm.sh
fi
scripts/install-deps.sh

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

step "Building image-rs, attestation and the agent (release)"
cargo build --release --locked -p image-rs -p attestation -p agent
IMAGE_RS=$ROOT/target/release/image-rs
AA=$ROOT/target/release/attestation-agent
DEV_KBS=$ROOT/target/release/dev-kbs
GUEST_AGENT=$ROOT/target/release/guest-agent
AGENTCTL=$ROOT/target/release/agentctl

WORK=$(mktemp -d /tmp/sealpod-demo.XXXXXX)
REG_PID=
KBS_PIDS=()
AGENT_PIDS=()
cleanup() {
  set +e  # clean up as much as possible, whatever fails
  for p in "${AGENT_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  { grep -o " $WORK/agent[^ ]*-state[^ ]*" /proc/self/mountinfo || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  for p in "${KBS_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  for m in "$WORK/overlay-rootfs"; do mountpoint -q "$m" 2>/dev/null && umount "$m"; done
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi
  for _ in 1 2 3 4 5; do rm -rf "$WORK" 2>/dev/null && break; sleep 0.2; done
  if [ -e "$WORK" ]; then echo "warning: could not remove $WORK" >&2; fi
}
trap cleanup EXIT

PORT=$(free_port)
step "Starting docker-registry on 127.0.0.1:$PORT"
start_registry "$WORK" "$PORT"

step "Building a busybox image with umoci (2 layers: base, then an update that deletes a file)"
cd "$WORK"
umoci init --layout layout
umoci new --image layout:demo
umoci unpack --image layout:demo bundle >/dev/null
mkdir -p bundle/rootfs/bin bundle/rootfs/etc
cp /usr/bin/busybox bundle/rootfs/bin/busybox
for a in sh ls cat echo; do ln -s busybox "bundle/rootfs/bin/$a"; done
echo "Welcome to a Sealpod demo image" > bundle/rootfs/etc/motd
echo "temporary" > bundle/rootfs/etc/obsolete
umoci repack --image layout:demo bundle
rm -rf bundle
umoci unpack --image layout:demo bundle >/dev/null
rm bundle/rootfs/etc/obsolete
echo "build $(date -u +%F)" > bundle/rootfs/etc/build-info
umoci repack --image layout:demo bundle
umoci config --image layout:demo --config.cmd /bin/sh >/dev/null
rm -rf bundle

step "Pushing it with skopeo: OCI (gzip) and Docker schema 2"
skopeo copy -q --dest-tls-verify=false oci:layout:demo "docker://127.0.0.1:$PORT/demo/busybox:gzip"
skopeo copy -q --dest-tls-verify=false --format v2s2 oci:layout:demo "docker://127.0.0.1:$PORT/demo/busybox:docker"

STORE=$WORK/store
step "image-rs pull --layout flat (every byte checked against the manifest, config diff_ids verified)"
t=$(now)
$IMAGE_RS pull "127.0.0.1:$PORT/demo/busybox:gzip" --rootfs "$WORK/flat-rootfs" --layout flat --store "$STORE" --progress plain
echo "took $(ms "$t") ms"
echo "rootfs:"; ls -l "$WORK/flat-rootfs/bin" "$WORK/flat-rootfs/etc"
echo "etc/obsolete deleted by the second layer's whiteout: $([ -e "$WORK/flat-rootfs/etc/obsolete" ] && echo NO || echo yes)"
echo "running /bin/sh -c 'cat /etc/motd' in it (chroot):"
chroot "$WORK/flat-rootfs" /bin/sh -c 'cat /etc/motd'

step "image-rs pull --layout overlay (the guest default: shared layers, private upper dir)"
t=$(now)
$IMAGE_RS pull "127.0.0.1:$PORT/demo/busybox:gzip" --rootfs "$WORK/overlay-rootfs" --store "$STORE" --progress plain
echo "took $(ms "$t") ms (layers came from the store: nothing fetched)"
findmnt -n -o FSTYPE,OPTIONS "$WORK/overlay-rootfs" | cut -c1-160
$IMAGE_RS unmount --rootfs "$WORK/overlay-rootfs" --store "$STORE"

step "image-rs pull of the Docker schema 2 variant (a different manifest, the same layers)"
$IMAGE_RS pull "127.0.0.1:$PORT/demo/busybox:docker" --rootfs "$WORK/docker-rootfs" --layout flat --store "$STORE" --progress plain
diff -r "$WORK/flat-rootfs" "$WORK/docker-rootfs" >/dev/null && echo "the Docker-format rootfs is identical to the OCI one"

step "An encrypted image: skopeo copy --encryption-key encrypts the layers for an RSA key (ocicrypt JWE)"
echo "(the host and the registry only ever see ciphertext; the config and the manifest stay readable)"
openssl genrsa -out "$WORK/key.pem" 2048 2>/dev/null
openssl rsa -in "$WORK/key.pem" -pubout -out "$WORK/key.pub.pem" 2>/dev/null
skopeo copy -q --dest-tls-verify=false --encryption-key "jwe:$WORK/key.pub.pem" \
  oci:layout:demo "docker://127.0.0.1:$PORT/demo/busybox:encrypted"
skopeo inspect --tls-verify=false --raw "docker://127.0.0.1:$PORT/demo/busybox:encrypted" \
  | jq -r '.layers[] | "  layer \(.digest[0:19])... \(.mediaType)"'
echo "without the private key the guest cannot use it (even with the same layers in its store):"
if $IMAGE_RS pull "127.0.0.1:$PORT/demo/busybox:encrypted" --rootfs "$WORK/enc-denied" --store "$STORE" --progress none 2>"$WORK/nokey.err"; then
  echo "UNEXPECTED: pull succeeded"; exit 1
fi
cut -c1-200 "$WORK/nokey.err" | sed 's/^/  /'
echo "with it, the layers are decrypted inside the pull stream (digest, HMAC, plain digest, diff_id checked):"
$IMAGE_RS pull "127.0.0.1:$PORT/demo/busybox:encrypted" --rootfs "$WORK/enc-rootfs" --layout flat --store "$STORE" \
  --decryption-key "$WORK/key.pem" --progress plain
diff -r "$WORK/flat-rootfs" "$WORK/enc-rootfs" >/dev/null && echo "the decrypted rootfs is identical to the plain one"

step "Signed images: the pod owner signs; a policy accepts only images carrying that signature"
printf 'demo passphrase\n' > "$WORK/owner.pass"
$IMAGE_RS generate-sigstore-key --output-prefix "$WORK/owner" --passphrase-file "$WORK/owner.pass" >/dev/null
$IMAGE_RS copy "docker://127.0.0.1:$PORT/demo/busybox:gzip" "docker://127.0.0.1:$PORT/demo/busybox:signed" \
  --sign-by-sigstore-private-key "$WORK/owner.private" --sign-passphrase-file "$WORK/owner.pass" >/dev/null
cat > "$WORK/image-policy.json" <<JSON
{"default": [{"type": "reject"}],
 "transports": {"docker": {"127.0.0.1:$PORT/demo": [{"type": "sigstoreSigned", "keyPath": "$WORK/owner.pub"}]}}}
JSON
echo "policy: images from 127.0.0.1:$PORT/demo must be signed by the owner's key; anything else is rejected"
echo "the signed image (checked before any layer is fetched):"
$IMAGE_RS verify "127.0.0.1:$PORT/demo/busybox:signed" --policy "$WORK/image-policy.json" | sed 's/^/  /'
echo "another image of the same repository (the Docker-format variant), not signed:"
if $IMAGE_RS verify "127.0.0.1:$PORT/demo/busybox:docker" --policy "$WORK/image-policy.json" 2>"$WORK/unsigned.err"; then
  echo "UNEXPECTED: unsigned image accepted"; exit 1
fi
fold -s -w 150 "$WORK/unsigned.err" | sed 's/^/  /'
echo "(in a pod, the policy comes from initdata image-policy.json or from the KBS, and keyPath may be a kbs:/// key)"

start_kbs() { # $1 = policy; sets KBS_URL (not in a subshell: cleanup must know the PID)
  "$DEV_KBS" --listen 127.0.0.1:0 --resources "$WORK/kbs" --policy "$1" >"$WORK/kbs-$1.out" 2>"$WORK/kbs-$1.log" &
  KBS_PIDS+=($!)
  for _ in $(seq 100); do grep -q '^listening on ' "$WORK/kbs-$1.out" 2>/dev/null && break; sleep 0.05; done
  KBS_URL=$(sed -n 's/^listening on //p' "$WORK/kbs-$1.out")
}
step "Remote attestation: a key released by a KBS only to an attested guest (dev-kbs, sample TEE)"
echo "(dev-kbs verifies no hardware evidence; a real guest attests with SNP/TDX to a Trustee KBS)"
mkdir -p "$WORK/kbs/default/key"
head -c 32 /dev/urandom > "$WORK/kbs/default/key/1"
start_kbs allow-all; KBS=$KBS_URL
t=$(now)
$AA get-resource --kbs-url "$KBS" --tee sample kbs:///default/key/1 | cmp - "$WORK/kbs/default/key/1" \
  && echo "auth -> sample evidence bound to the nonce and an ephemeral key -> token -> key as JWE: $(ms "$t") ms"
echo "a TEE is never guessed: without --tee, on a machine without one, the agent refuses:"
$AA get-resource --kbs-url "$KBS" kbs:///default/key/1 2>&1 >/dev/null | sed 's/^/  /' || true
start_kbs deny-sample; KBS_DENY=$KBS_URL
echo "a KBS whose policy refuses the sample TEE (as a real KBS's default policy does):"
if $AA get-resource --kbs-url "$KBS_DENY" --tee sample kbs:///default/key/1 >/dev/null 2>"$WORK/deny.err"; then
  echo "UNEXPECTED: key released"; exit 1
fi
sed 's/^/  /' "$WORK/deny.err"

cp "$ROOT/scripts/pod-policy.rego" "$WORK/policy.rego"
make_initdata() { # $1 = KBS URL, $2 = file; prints the launch field a VMM would set for it
  {
    printf 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n'
    printf '"aa.toml" = """\n[token_configs.kbs]\nurl = "%s"\n"""\n' "$1"
    printf '"policy.rego" = """\n%s\n"""\n' "$(cat "$WORK/policy.rego")"
  } > "$2"
  # What a VMM puts in SNP host-data / TDX mrconfigid: the initdata digest (zero padded).
  echo "$(sha384sum "$2" | cut -d' ' -f1)$(printf '0%.0s' $(seq 32))"
}
start_agent() { # $1 = name, $2 = initdata file, $3 = launch field; waits until it serves
  echo "agent.tee=sample agent.image_decryption_keys=kbs:///default/image-key/rsa" > "$WORK/$1.cmdline"
  SEALPOD_SAMPLE_LAUNCH_CONFIG=$3 "$GUEST_AGENT" --server-addr "unix://$WORK/$1.sock" \
    --state-dir "$WORK/$1-state" --cmdline-file "$WORK/$1.cmdline" --initdata "$2" \
    --log-level warn 2>"$WORK/$1.log" &
  AGENT_PIDS+=($!)
  for _ in $(seq 200); do "$AGENTCTL" --addr "unix://$WORK/$1.sock" check >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "the agent did not start:"; cat "$WORK/$1.log"; exit 1
}

step "The images the pod will run: plain, encrypted by skopeo (JWE), encrypted for a KBS key (kbs:///)"
mkdir -p "$WORK/kbs/default/image-key"
cp "$WORK/key.pem" "$WORK/kbs/default/image-key/rsa"
$IMAGE_RS copy oci:"$WORK/layout:demo" "docker://127.0.0.1:$PORT/demo/busybox:kbs" \
  --encryption-key "provider:kbs:///default/key/1=$WORK/kbs/default/key/1" >/dev/null
echo "  127.0.0.1:$PORT/demo/busybox:gzip       plain"
echo "  127.0.0.1:$PORT/demo/busybox:encrypted  skopeo --encryption-key jwe: (private key = KBS resource default/image-key/rsa)"
echo "  127.0.0.1:$PORT/demo/busybox:kbs        CoCo key provider (KEK = KBS resource default/key/1)"
echo "the KBS holds both keys; the host never gets them. The pod's initdata names the KBS and the policy:"
LAUNCH=$(make_initdata "$KBS" "$WORK/initdata.toml")
sed 's/^/  | /' "$WORK/initdata.toml" | head -8; echo "  | ..."

step "The guest agent starts: initdata must match the TEE's launch measurement (guest-agent on a unix socket)"
echo "(in a VM it listens on vsock and the TEE is SNP/TDX; here a unix socket stands in, and the TEE is the sample one)"
start_agent agent "$WORK/initdata.toml" "$LAUNCH"
CTL=("$AGENTCTL" --addr "unix://$WORK/agent.sock")
echo "initdata matched; the policy it carries now guards every request. The agent is serving:"
"${CTL[@]}" version

step "A container from the plain image, pulled inside the guest"
t=$(now)
"${CTL[@]}" run "127.0.0.1:$PORT/demo/busybox:gzip" -- /bin/sh -c 'cat /etc/motd; echo "running as PID $$ in its own PID namespace"'
echo "($(ms "$t") ms: pull + create + start + run + remove)"

step "A container from the skopeo-encrypted image: the guest attests, gets the private key from the KBS, decrypts"
t=$(now)
"${CTL[@]}" run "127.0.0.1:$PORT/demo/busybox:encrypted" -- /bin/cat /etc/motd
echo "($(ms "$t") ms, attestation included)"
grep -o "resource released.*image-key.*" "$WORK/kbs-allow-all.log" | sed 's/^/  dev-kbs: /'

step "A container from the kbs:/// image: the KEK comes from the KBS over the same attested session"
t=$(now)
"${CTL[@]}" run "127.0.0.1:$PORT/demo/busybox:kbs" -- /bin/cat /etc/motd
echo "($(ms "$t") ms)"

step "The pod's policy refuses exec (checked before anything happens; the host cannot change it)"
if "${CTL[@]}" exec some-container -- /bin/sh 2>"$WORK/exec.err"; then echo "UNEXPECTED: exec allowed"; exit 1; fi
sed 's/^/  /' "$WORK/exec.err"
if "${CTL[@]}" set-policy /dev/null 2>"$WORK/setpolicy.err"; then echo "UNEXPECTED: SetPolicy allowed"; exit 1; fi
echo "and the host cannot replace the policy either:"; sed 's/^/  /' "$WORK/setpolicy.err"

step "A guest the KBS does not accept cannot decrypt (a KBS whose policy refuses this TEE)"
LAUNCH2=$(make_initdata "$KBS_DENY" "$WORK/initdata-deny.toml")
start_agent agent-deny "$WORK/initdata-deny.toml" "$LAUNCH2"
if "$AGENTCTL" --addr "unix://$WORK/agent-deny.sock" run "127.0.0.1:$PORT/demo/busybox:kbs" -- /bin/true 2>"$WORK/run-deny.err"; then
  echo "UNEXPECTED: the encrypted image ran"; exit 1
fi
fold -s -w 150 "$WORK/run-deny.err" | sed 's/^/  /'
echo "the plain image still runs there:"
"$AGENTCTL" --addr "unix://$WORK/agent-deny.sock" run "127.0.0.1:$PORT/demo/busybox:gzip" -- /bin/echo "  plain image ok"

step "An agent given initdata the TEE was not launched with refuses to start"
echo '# tampered' >> "$WORK/initdata.toml"
if SEALPOD_SAMPLE_LAUNCH_CONFIG=$LAUNCH "$GUEST_AGENT" --server-addr "unix://$WORK/agent2.sock" \
  --state-dir "$WORK/agent-state2" --cmdline-file "$WORK/agent.cmdline" --initdata "$WORK/initdata.toml" 2>"$WORK/agent2.err"; then
  echo "UNEXPECTED: agent started"; exit 1
fi
grep -o 'the initdata from .*launched with[^;]*' "$WORK/agent2.err" | cut -c1-160 | sed 's/^/  /'

step "A tampered reference is refused (wrong digest pinned)"
BAD="127.0.0.1:$PORT/demo/busybox@sha256:$(printf '0%.0s' $(seq 64))"
if $IMAGE_RS pull "$BAD" --rootfs "$WORK/bad" --store "$STORE" --progress none; then
  echo "UNEXPECTED: pull succeeded"; exit 1
fi

step "The store"
$IMAGE_RS images --store "$STORE"
echo
step "Done"
echo "Demo complete in $(( ($(now) - DEMO_T0) / 1000000000 )) s: images pulled, verified and decrypted inside the guest with keys"
echo "released only after attestation; requests checked by the pod's policy. Everything it started is being cleaned up."
