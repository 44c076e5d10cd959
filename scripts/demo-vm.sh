#!/usr/bin/env bash
# The confidential pod flow in a real guest (as root): qemu (TCG) boots Debian's
# 6.12 cloud kernel with guest-agent as /init; the host talks to the agent over
# virtio-vsock through vhost-device-vsock's hybrid-vsock socket (as a Firecracker
# or Cloud Hypervisor host reaches a Kata guest). The guest's only network is
# qemu's user net with restrict=on and two guestfwd forwards to the host's
# registry and dev-kbs at 10.0.2.100. Prints each step and its time; cleans up.
# Run as `./scripts/demo.sh vm` (or directly).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
scripts/install-deps.sh

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

VHDV=/var/cache/sealpod/vhost-device-vsock-0.3.0/bin/vhost-device-vsock
HOST_IN_GUEST=10.0.2.100
WORK=$(mktemp -d /tmp/sealpod-demo-vm.XXXXXX)
PIDS=()
QEMU_PID=
cleanup() {
  set +e  # clean up as much as possible, whatever fails
  if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
    kill -- -"$QEMU_PID" 2>/dev/null; wait "$QEMU_PID" 2>/dev/null
  fi
  for p in "${PIDS[@]}"; do kill -- -"$p" 2>/dev/null || kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
# Each background service in its own process group (killed as a group).
bg() { setsid "$@" & }

step "Building the agent, image-rs, attestation and kernel-config (release)"
cargo build --release --locked -p image-rs -p attestation -p agent -p kernel-config
BIN=$ROOT/target/release
CTL=("$BIN/agentctl" --addr "unix://$WORK/vm.vsock" --hybrid-vsock)

step "Building the guest: Debian's 6.12 cloud kernel (apt-get download, cached) + an initramfs with guest-agent as /init"
eval "$(scripts/vm/build-guest.sh --agent "$BIN/guest-agent" --kernel-config "$BIN/kernel-config")"
echo "kernel $KVER"; echo "  $KERNEL"; echo "  $INITRD ($(du -h "$INITRD" | cut -f1))"

PORT=$(free_port)
step "The host's registry (docker-registry on 127.0.0.1:$PORT) with busybox: plain, and encrypted for a KBS key"
start_registry "$WORK" "$PORT"
PIDS+=("$REG_PID")
(
  cd "$WORK"
  umoci init --layout layout
  umoci new --image layout:demo
  umoci unpack --image layout:demo bundle >/dev/null
  mkdir -p bundle/rootfs/bin bundle/rootfs/etc
  cp /bin/busybox bundle/rootfs/bin/busybox
  for a in sh ls cat echo hostname uname; do ln -s busybox "bundle/rootfs/bin/$a"; done
  echo "Welcome to a Sealpod demo image, running in a VM" > bundle/rootfs/etc/motd
  umoci repack --image layout:demo bundle
  umoci config --image layout:demo --config.cmd /bin/sh >/dev/null
  rm -rf bundle
)
skopeo copy -q --dest-tls-verify=false oci:"$WORK/layout:demo" "docker://127.0.0.1:$PORT/demo/busybox:plain"
mkdir -p "$WORK/kbs/default/key"
head -c 32 /dev/urandom > "$WORK/kbs/default/key/1"
"$BIN/image-rs" copy oci:"$WORK/layout:demo" "docker://127.0.0.1:$PORT/demo/busybox:kbs" \
  --encryption-key "provider:kbs:///default/key/1=$WORK/kbs/default/key/1" >/dev/null
echo "  127.0.0.1:$PORT/demo/busybox:plain  (the guest sees $HOST_IN_GUEST:5000/demo/busybox:plain)"
echo "  127.0.0.1:$PORT/demo/busybox:kbs    encrypted; KEK = KBS resource default/key/1"

step "dev-kbs on 127.0.0.1 (releases the KEK only to an attested guest; sample TEE, development only)"
bg "$BIN/dev-kbs" --listen 127.0.0.1:0 --resources "$WORK/kbs" --policy allow-all >"$WORK/kbs.out" 2>"$WORK/kbs.log"
PIDS+=($!)
for _ in $(seq 100); do grep -q '^listening on ' "$WORK/kbs.out" 2>/dev/null && break; sleep 0.05; done
KBS=$(sed -n 's/^listening on //p' "$WORK/kbs.out")
KBS_PORT=${KBS##*:}
echo "  $KBS (the guest sees http://$HOST_IN_GUEST:8080)"

step "The pod's initdata (KBS URL, policy without exec) on a read-only disk, its digest as the launch field"
cat > "$WORK/initdata.toml" <<TOML
version = "0.1.0"
algorithm = "sha384"
[data]
"aa.toml" = '''
[token_configs.kbs]
url = "http://$HOST_IN_GUEST:8080"
'''
"policy.rego" = '''
$(cat "$ROOT/scripts/pod-policy.rego")
'''
TOML
DIGEST=$("$BIN/attestation-agent" initdata-disk --initdata "$WORK/initdata.toml" --output "$WORK/initdata.img")
# The sample TEE's 64-byte launch field: what a VMM puts in SNP host-data / TDX mrconfigid.
LAUNCH=$DIGEST$(printf '0%.0s' $(seq $(( 128 - ${#DIGEST} ))))
echo "initdata digest (sha384): $DIGEST"
echo "disk: $WORK/initdata.img ($(stat -c %s "$WORK/initdata.img") bytes), attached read-only as virtio-blk"

step "Booting the VM: vhost-device-vsock, then qemu (TCG; guest network = user net, restrict=on, 2 guestfwd forwards)"
bg "$VHDV" --guest-cid 3 --socket "$WORK/vhu.sock" --uds-path "$WORK/vm.vsock" >"$WORK/vhost.log" 2>&1
PIDS+=($!)
for _ in $(seq 100); do [ -S "$WORK/vhu.sock" ] && break; sleep 0.05; done
APPEND="console=ttyS0 quiet panic=-1 agent.log=info agent.tee=sample agent.image_insecure_registries=$HOST_IN_GUEST:5000 SEALPOD_SAMPLE_LAUNCH_CONFIG=$LAUNCH"
echo "kernel command line: $APPEND"
BOOT_T=$(now)
bg qemu-system-x86_64 -machine q35,memory-backend=mem0 -accel tcg -cpu max -m 1G -smp 2 \
  -nodefaults -no-user-config -display none -no-reboot -serial "file:$WORK/console.log" \
  -object memory-backend-memfd,id=mem0,size=1G,share=on \
  -chardev "socket,id=vc0,path=$WORK/vhu.sock" -device vhost-user-vsock-pci,chardev=vc0 \
  -netdev "user,id=n0,restrict=on,guestfwd=tcp:$HOST_IN_GUEST:5000-cmd:socat STDIO TCP:127.0.0.1:$PORT,guestfwd=tcp:$HOST_IN_GUEST:8080-cmd:socat STDIO TCP:127.0.0.1:$KBS_PORT" \
  -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 \
  -drive "file=$WORK/initdata.img,if=virtio,format=raw,readonly=on" \
  -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" >"$WORK/qemu.log" 2>&1
QEMU_PID=$!
until "${CTL[@]}" --timeout 2 check >/dev/null 2>&1; do
  if ! kill -0 "$QEMU_PID" 2>/dev/null; then echo "qemu exited:"; cat "$WORK/qemu.log" "$WORK/console.log"; exit 1; fi
  if [ "$(ms "$BOOT_T")" -gt 120000 ]; then echo "the agent did not answer within 120 s:"; cat "$WORK/console.log"; exit 1; fi
  sleep 0.2
done
echo "guest-agent (PID 1 of the VM) answered over vsock $(ms "$BOOT_T") ms after qemu started"
grep -o "initdata matches the TEE's launch measurement" "$WORK/console.log" | head -1 | sed 's/^/  guest: /'
echo "guest console so far:"; sed 's/\x1b\[[0-9;]*m//g' "$WORK/console.log" | cut -c1-200 | sed 's/^/  | /' | head -8

step "check and guest-details over vsock"
"${CTL[@]}" check
"${CTL[@]}" guest-details
t=$(now); for _ in $(seq 20); do "${CTL[@]}" check >/dev/null; done
echo "20 agentctl check processes (connect + handshake + call each): $(( $(ms "$t") / 20 )) ms per call"

step "The guest's network, the Kata way: UpdateInterface + UpdateRoutes"
"${CTL[@]}" call UpdateInterface '{"interface":{"name":"eth0","hwAddr":"52:54:00:12:34:56","mtu":1500,"IPAddresses":[{"family":"v4","address":"10.0.2.15","mask":"24"}]}}' \
  | jq -c '{name, mtu, IPAddresses: [.IPAddresses[].address]}'
"${CTL[@]}" call UpdateRoutes '{"routes":{"Routes":[{"dest":"default","gateway":"10.0.2.2","device":"eth0"}]}}' \
  | jq -c '[.Routes[] | "\(.dest) via \(.gateway) dev \(.device)"]'
"${CTL[@]}" call CreateSandbox '{"hostname":"sealpod-vm","sandbox_id":"demo"}' >/dev/null

step "A container from the plain image, pulled BY THE GUEST from the host's registry"
t=$(now)
"${CTL[@]}" run "$HOST_IN_GUEST:5000/demo/busybox:plain" -- /bin/sh -c 'cat /etc/motd; echo "kernel $(uname -r), PID $$ in its own PID namespace"'
echo "($(ms "$t") ms: pull through guestfwd + create + start + run + remove, under TCG)"

step "A container from the KBS-encrypted image: the guest attests (sample TEE) to dev-kbs for the KEK, decrypts in the pull stream"
t=$(now)
"${CTL[@]}" run "$HOST_IN_GUEST:5000/demo/busybox:kbs" -- /bin/cat /etc/motd
echo "($(ms "$t") ms, attestation included)"
grep -c "released" "$WORK/kbs.log" | sed 's/^/  keys the KBS released: /'

step "A request the pod's policy denies: exec (the policy came with the measured initdata; SetPolicy is not allowed either)"
if "${CTL[@]}" exec some-container -- /bin/sh 2>"$WORK/exec.err"; then echo "UNEXPECTED: exec allowed"; exit 1; fi
sed 's/^/  /' "$WORK/exec.err"
if "${CTL[@]}" set-policy /dev/null 2>"$WORK/setpolicy.err"; then echo "UNEXPECTED: SetPolicy allowed"; exit 1; fi
sed 's/^/  /' "$WORK/setpolicy.err"

step "DestroySandbox: the agent removes the containers and powers the VM off"
t=$(now)
"${CTL[@]}" call DestroySandbox '{}' >/dev/null
for _ in $(seq 300); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$QEMU_PID" 2>/dev/null; then echo "UNEXPECTED: the VM is still running"; exit 1; fi
wait "$QEMU_PID" 2>/dev/null || true
echo "qemu exited $(ms "$t") ms after DestroySandbox; the guest's last words:"
sed 's/\x1b\[[0-9;]*m//g' "$WORK/console.log" | tail -3 | cut -c1-160 | sed 's/^/  | /'
step "Done"
echo "VM demo complete in $(( ($(now) - DEMO_T0) / 1000000000 )) s. Everything it started is being cleaned up."
