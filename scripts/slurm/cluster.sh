#!/usr/bin/env bash
# A real Slurm cluster (munged + slurmctld + slurmd) on this machine, for CI and the Slurm tests.
# Needs root (it writes /etc/slurm/slurm.conf, starts the daemons, and in two-node mode creates
# network namespaces).
#
#   scripts/slurm/cluster.sh install           # Debian's slurm-wlm + munge, if missing (apt-get)
#   scripts/slurm/cluster.sh start [--nodes 2] # write slurm.conf, start the daemons, wait for idle nodes
#   scripts/slurm/cluster.sh stop              # stop the daemons by their pid files, remove the namespaces
#
# One node (the default): slurmd on 127.0.0.1, as before.
# Two nodes (--nodes 2, or FROZENBENCH_SLURM_NODES=2): each slurmd runs in its own network
# namespace (fb-node1 / fb-node2, addresses 10.77.0.11 / .12 on a bridge fbbr0 at 10.77.0.1, no
# route beyond it: the nodes have no network but each other and the controller, like many
# compute nodes) and its own UTS namespace (hostnames fbnode1 / fbnode2, in /etc/hosts while the
# cluster runs), sharing the file system as cluster nodes do. A job step started on fbnode2 sees
# fbnode2's hostname and address, so torchrun's rendezvous and gloo cross the bridge as they
# cross a real network. Both nodes declare this machine's CPUs and memory (they overcommit it), and
# TaskPlugin=task/affinity binds each step to the CPUs Slurm gave it, so a step started without
# --cpus-per-task gets one CPU, as on a real cluster.
#
# Settings measured on these machines (see README, "Running the paper study on a cluster"): no
# systemd, so the daemons are started by hand; DefMemPerCPU so a job without --mem does not take
# the whole node; no slurmdbd, so the snakemake profile polls with squeue, which needs
# MinJobAge >= 120.
set -euo pipefail

STATE=${FROZENBENCH_SLURM_STATE:-/tmp/frozenbench-slurm}
CONF=/etc/slurm/slurm.conf
NODES=${FROZENBENCH_SLURM_NODES:-1}
BRIDGE=fbbr0
SUBNET=10.77.0
HOSTS_MARK="# frozenbench-slurm"

install() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm slurm-client munge >/dev/null
}

node_names() {
    if [[ $NODES == 1 ]]; then echo localhost; else for i in $(seq "$NODES"); do echo "fbnode$i"; done; fi
}

write_conf() {
    local cpus mem_mb def_mem ctld nodes_line partition_nodes task_plugin
    cpus=$(nproc)
    # two nodes each declare this machine's memory, as they declare its CPUs (a job asking for a
    # whole node's memory must fit on one, as on a real cluster)
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
    def_mem=$((mem_mb / cpus))
    mkdir -p /etc/slurm "$STATE/spool/ctld" "$STATE/log"
    if [[ $NODES == 1 ]]; then
        ctld=localhost
        nodes_line="NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
        partition_nodes=localhost
        task_plugin=task/none
    else
        # the controller runs in this (the login node's) namespace; the nodes reach it on the bridge
        ctld="localhost($SUBNET.1)"
        nodes_line="NodeName=fbnode[1-$NODES] NodeAddr=$(seq -s, -f "$SUBNET.1%g" "$NODES") CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
        partition_nodes="fbnode[1-$NODES]"
        task_plugin=task/affinity
    fi
    for node in $(node_names); do mkdir -p "$STATE/spool/$node"; done
    cat >"$CONF" <<CONF
# written by frozenbench scripts/slurm/cluster.sh ($NODES node(s))
ClusterName=frozenbench
SlurmctldHost=$ctld
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=$task_plugin
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
$nodes_line
PartitionName=debug Nodes=$partition_nodes Default=YES MaxTime=INFINITE State=UP
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

network_up() {  # a bridge and one namespace per node; munge's socket is a file, reachable from all
    network_down
    ip link add "$BRIDGE" type bridge
    ip addr add "$SUBNET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    local i
    for i in $(seq "$NODES"); do
        ip netns add "fb-node$i"
        # the peer is created here and then moved: naming it inside the namespace at creation
        # collides with this namespace's own interfaces on some kernels ("File exists")
        ip link add "fbveth$i" type veth peer name "fbnode$i-eth"
        ip link set "fbnode$i-eth" netns "fb-node$i"
        ip link set "fbveth$i" master "$BRIDGE" up
        ip -n "fb-node$i" addr add "$SUBNET.1$i/24" dev "fbnode$i-eth"
        ip -n "fb-node$i" link set "fbnode$i-eth" up
        ip -n "fb-node$i" link set lo up
        echo "$SUBNET.1$i fbnode$i $HOSTS_MARK" >>/etc/hosts
    done
}

network_down() {
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '/^fb-node/ {print $1}'); do ip netns delete "$ns"; done
    if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link delete "$BRIDGE"; fi
    if grep -q "$HOSTS_MARK" /etc/hosts; then
        # /etc/hosts may be a bind mount (containers): rewrite it in place rather than replace it
        local kept
        kept=$(grep -v "$HOSTS_MARK" /etc/hosts)
        printf '%s\n' "$kept" >/etc/hosts
    fi
}

start() {
    install
    write_conf
    start_munge
    slurmctld
    if [[ $NODES == 1 ]]; then
        slurmd -N localhost
    else
        network_up
        local i
        for i in $(seq "$NODES"); do
            # nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup file system slurmd needs
            nsenter --net="/run/netns/fb-node$i" unshare --uts -- sh -c "hostname fbnode$i && exec slurmd -N fbnode$i"
        done
    fi
    local idle
    for _ in $(seq 60); do
        idle=$(sinfo -h -N -o '%N %T' 2>/dev/null | awk '$2 == "idle"' | wc -l)
        if [[ $idle -ge $NODES ]]; then
            echo "slurm: $NODES node(s) idle ($(nproc) CPUs each: $(node_names | tr '\n' ' ')); state in $STATE"
            return
        fi
        sleep 1
    done
    echo "slurm: the nodes did not become idle within 60 s; logs in $STATE/log" >&2
    sinfo -N >&2 || true
    exit 1
}

stop() {
    local pidfile pid
    for pidfile in "$STATE"/slurmd-*.pid "$STATE/slurmd.pid" "$STATE/slurmctld.pid" /run/munge/munged.pid; do
        [[ -f $pidfile ]] || continue
        pid=$(cat "$pidfile")
        if kill "$pid" 2>/dev/null; then
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "$pidfile"
    done
    network_down
    echo "slurm: stopped"
}

case "${1:-}" in
    install) install ;;
    start)
        if [[ ${2:-} == --nodes ]]; then NODES=${3:?--nodes needs a count}; fi
        [[ $NODES =~ ^[12]$ ]] || { echo "cluster.sh: --nodes must be 1 or 2, got '$NODES'" >&2; exit 2; }
        start
        ;;
    stop) stop ;;
    *) echo "usage: $0 install | start [--nodes 1|2] | stop" >&2; exit 2 ;;
esac
