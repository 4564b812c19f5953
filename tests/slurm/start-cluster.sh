#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests/test_slurm.py and CI.
#
#   tests/slurm/start-cluster.sh      install what is missing, start munged, slurmctld, slurmd
#   tests/slurm/stop-cluster.sh       stop them again (by the pids recorded at start)
#
# Needs root on Debian or Ubuntu. Every file the cluster writes (config, munge key and socket,
# state, spool, logs, pid files) lives under one folder, $LABRUNNER_SLURM_DIR (default
# /tmp/labrunner-slurm). The one file outside it is /etc/slurm/slurm.conf, a link to the config
# in that folder: the SLURM commands find their cluster there, and SLURM_CONF cannot replace it
# (the SLURM executor plugin's job step removes SLURM_* variables before it calls srun). A
# machine whose /etc/slurm/slurm.conf is something else is refused. The daemons are machine-wide
# (ports 6817 and 6818): one such cluster per machine.
#
# Idempotent: a cluster that already runs from that folder is left as it is ("already running").
set -euo pipefail

DIR=${LABRUNNER_SLURM_DIR:-/tmp/labrunner-slurm}
CONF=$DIR/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge)
READY_WAIT_S=30

say() { echo "slurm-cluster: $*"; }
die() { echo "slurm-cluster: error: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "must run as root (it installs Debian packages and runs the SLURM daemons as root)"

alive() {  # alive PIDFILE NAME: the pid in PIDFILE is a running process called NAME
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}

install_packages() {
    local missing=()
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if ((${#missing[@]} == 0)); then
        say "packages already installed: ${PACKAGES[*]}"
        return
    fi
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them (Debian or Ubuntu only)"
    say "installing ${missing[*]} (apt-get update, then apt-get install --no-install-recommends)"
    apt-get update -q >"$DIR/apt.log" 2>&1 || die "apt-get update failed; see $DIR/apt.log"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$DIR/apt.log" 2>&1 \
        || die "apt-get install ${missing[*]} failed; see $DIR/apt.log"
}

write_config() {
    local host cpus memory_mb
    host=$(hostname -s)
    cpus=$(nproc)
    # what slurmd may hand out: 85% of the memory, so that the daemons and the test keep some
    memory_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.85}' /proc/meminfo)
    cat >"$CONF" <<EOF
# written by tests/slurm/start-cluster.sh: a single-node cluster for labrunner's tests
ClusterName=labrunner-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# schedule a batch job when it is submitted, not up to 3 s later (the default delay)
SchedulerParameters=batch_sched_delay=0
# finished jobs stay visible to squeue for 5 minutes: the status command of the tests
MinJobAge=300
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    say "wrote $CONF (node $host: $cpus CPUs, $memory_mb MB)"
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -sfn "$CONF" "$SYSTEM_CONF"
    say "linked $SYSTEM_CONF -> $CONF"
}

check_system_conf() {  # a config of the machine's own is never replaced
    if [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]] && [[ $(readlink "$SYSTEM_CONF" || true) != "$CONF" ]]; then
        die "$SYSTEM_CONF exists and is not a link to $CONF: this machine has a SLURM config of its own; not touching it"
    fi
}

start_munge() {
    # a key and a socket of our own, so that a munged of the machine (if any) is left alone
    install -d -o munge -g munge -m 0755 "$DIR/munge"
    if [[ ! -s $DIR/munge/munge.key ]]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chown munge:munge "$DIR/munge/munge.key"
        chmod 0400 "$DIR/munge/munge.key"
    fi
    runuser -u munge -- munged --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
        || die "munged did not start; see $DIR/munge/munged.log"
    started "$DIR/munge/munged.pid" munged "$DIR/munge/munged.log"
}

started() {  # started PIDFILE NAME LOG: wait until the daemon that just forked has written its pid
    for _ in $(seq 100); do
        alive "$1" "$2" && { say "started $2 (pid $(<"$1"))"; return 0; }
        sleep 0.1
    done
    die "$2 did not start (no running pid in $1 after 10s); see $3"
}

wait_for_idle_node() {
    local state=""
    for _ in $(seq $((READY_WAIT_S * 10))); do
        state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
        [[ $state == idle ]] && return 0
        sleep 0.1
    done
    die "the node is not idle after ${READY_WAIT_S}s (sinfo says '${state:-nothing}'); see $DIR/log/slurmctld.log and $DIR/log/slurmd.log"
}

if alive "$DIR/munge/munged.pid" munged && alive "$DIR/slurmctld.pid" slurmctld && alive "$DIR/slurmd.pid" slurmd \
    && [[ $(readlink "$SYSTEM_CONF" || true) == "$CONF" ]] && sinfo -h -o %T 2>/dev/null | grep -qx idle; then
    say "already running from $DIR (slurmctld pid $(<"$DIR/slurmctld.pid"), slurmd pid $(<"$DIR/slurmd.pid"))"
    exit 0
fi
if [[ -e $DIR/slurmctld.pid || -e $DIR/slurmd.pid || -e $DIR/munge/munged.pid ]]; then
    say "a cluster from $DIR is partly running or was not stopped: stopping it first"
    "$(dirname "$0")/stop-cluster.sh"
fi
for daemon in slurmctld slurmd; do
    if pid=$(pgrep -x "$daemon"); then
        die "another $daemon runs on this machine (pid $(echo $pid)), not started from $DIR: stop it first"
    fi
done

mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
install_packages
check_system_conf
write_config
start_munge
# -i: start although there is no saved state yet (a fresh folder)
slurmctld -i -f "$CONF" || die "slurmctld did not start; see $DIR/log/slurmctld.log"
started "$DIR/slurmctld.pid" slurmctld "$DIR/log/slurmctld.log"
slurmd -f "$CONF" || die "slurmd did not start; see $DIR/log/slurmd.log"
started "$DIR/slurmd.pid" slurmd "$DIR/log/slurmd.log"
wait_for_idle_node
say "node $(hostname -s) is idle in partition debug; logs in $DIR/log"
