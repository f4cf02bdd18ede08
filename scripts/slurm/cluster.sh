#!/usr/bin/env bash
# A real single-node Slurm cluster (munged + slurmctld + slurmd) on this machine, for CI and
# the Slurm tests. Needs root (it writes /etc/slurm/slurm.conf and starts the daemons).
#
#   scripts/slurm/cluster.sh install   # Debian's slurm-wlm + munge, if missing (apt-get)
#   scripts/slurm/cluster.sh start     # write slurm.conf, start the daemons, wait for an idle node
#   scripts/slurm/cluster.sh stop      # stop the daemons by the pids they wrote
#
# Settings measured on these machines (see README, "Running the paper study on a cluster"): no systemd, so the daemons are
# started by hand; DefMemPerCPU so a job without --mem does not take the whole node; no
# slurmdbd, so the snakemake profile polls with squeue, which needs MinJobAge >= 120.
set -euo pipefail

STATE=${FROZENBENCH_SLURM_STATE:-/tmp/frozenbench-slurm}
CONF=/etc/slurm/slurm.conf
PIDS=("$STATE/slurmd.pid" "$STATE/slurmctld.pid" /run/munge/munged.pid)

install() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm slurm-client munge >/dev/null
}

write_conf() {
    local cpus mem_mb def_mem
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
    def_mem=$((mem_mb / cpus))
    mkdir -p /etc/slurm "$STATE/spool/ctld" "$STATE/spool/d" "$STATE/log"
    cat >"$CONF" <<CONF
# written by frozenbench scripts/slurm/cluster.sh
ClusterName=frozenbench
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
MinJobAge=300
DefMemPerCPU=$def_mem
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
}

start_munge() {
    if [[ -f /run/munge/munged.pid ]] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null; then
        return
    fi
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
    chmod 400 /etc/munge/munge.key
    runuser -u munge -- munged
}

start() {
    install
    write_conf
    start_munge
    slurmctld
    slurmd -N localhost
    for _ in $(seq 60); do
        if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
            echo "slurm: node idle ($(nproc) CPUs); state in $STATE"
            return
        fi
        sleep 1
    done
    echo "slurm: the node did not become idle within 60 s; logs in $STATE/log" >&2
    sinfo >&2 || true
    exit 1
}

stop() {
    local pidfile pid
    for pidfile in "${PIDS[@]}"; do
        [[ -f $pidfile ]] || continue
        pid=$(cat "$pidfile")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$pidfile"
    done
    echo "slurm: stopped"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
