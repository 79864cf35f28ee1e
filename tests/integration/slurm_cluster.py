"""A real single-node Slurm for tests: munged, slurmctld and slurmd from Debian's slurm-wlm and munge, started in a
temporary folder with their own key, socket, ports, state and logs (no system service is touched), and stopped
again. Clients see it through SLURM_CONF (SlurmCluster.env).

No cgroups (proctrack/pgid, task/none) and no accounting, so that it runs in a container as root; node and
partition take this machine's CPUs."""
import os
import shutil
import socket
import subprocess
import time

TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol")


def missing_tools():
    return [t for t in TOOLS if shutil.which(t) is None and not os.path.exists("/usr/sbin/" + t)]


def _tool(name):
    return shutil.which(name) or "/usr/sbin/" + name


def _free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class SlurmCluster:
    def __init__(self, root):
        self.root = root
        for d in ("munge", "state", "spool", "log"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        os.chmod(os.path.join(root, "munge"), 0o711)
        self.sock = os.path.join(root, "munge", "sock")
        key = os.path.join(root, "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        self.host = socket.gethostname()
        ctl, node = _free_ports(2)
        self.conf = os.path.join(root, "slurm.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join([
                "ClusterName=lvdtest",
                "SlurmctldHost=%s(127.0.0.1)" % self.host,
                "SlurmctldPort=%d" % ctl, "SlurmdPort=%d" % node,
                "SlurmUser=root", "SlurmdUser=root",
                "AuthType=auth/munge", "CredType=cred/munge", "AuthInfo=socket=%s" % self.sock,
                "StateSaveLocation=%s/state" % root, "SlurmdSpoolDir=%s/spool" % root,
                "SlurmctldPidFile=%s/slurmctld.pid" % root, "SlurmdPidFile=%s/slurmd.pid" % root,
                "SlurmctldLogFile=%s/log/slurmctld.log" % root, "SlurmdLogFile=%s/log/slurmd.log" % root,
                "ProctrackType=proctrack/pgid", "TaskPlugin=task/none",
                "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
                "SchedulerType=sched/builtin", "MpiDefault=none", "ReturnToService=2",
                "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/none", "SwitchType=switch/none", "MinJobAge=600",
                "NodeName=%s NodeAddr=127.0.0.1 CPUs=%d RealMemory=2000 State=UNKNOWN" % (self.host,
                                                                                          os.cpu_count()),
                "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4",
                ""]))
        self.env = {**os.environ, "SLURM_CONF": self.conf}
        self._procs = []
        try:
            subprocess.run([_tool("munged"), "--force", "-S", self.sock, "--key-file=" + key,
                            "--log-file=%s/log/munged.log" % root, "--pid-file=%s/munge/pid" % root,
                            "--seed-file=%s/munge/seed" % root], check=True, capture_output=True, timeout=30)
            # -D: in the foreground, as children of the test, so that they cannot outlive it unnoticed.
            self._procs.append(subprocess.Popen([_tool("slurmctld"), "-D", "-i", "-f", self.conf],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env))
            self._procs.append(subprocess.Popen([_tool("slurmd"), "-D", "-f", self.conf],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env))
            self._wait_idle(60)
        except Exception:
            self.close()
            raise

    def _wait_idle(self, timeout):
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            p = subprocess.run([_tool("sinfo"), "-h", "-o", "%T"], capture_output=True, text=True, env=self.env)
            state = p.stdout.strip()
            if state == "idle":
                return
            time.sleep(0.3)
        raise RuntimeError("the node did not become idle (%r); logs in %s/log" % (state, self.root))

    def run(self, *args, check=True, timeout=300):
        p = subprocess.run(list(args), capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("%s exited %d\nstdout:\n%s\nstderr:\n%s" % (args, p.returncode, p.stdout,
                                                                               p.stderr))
        return p

    def wait_jobs(self, ids, timeout=300):
        """Waits until none of the job ids is pending or running; returns {id: state} from scontrol."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            p = self.run(_tool("squeue"), "-h", "-o", "%i", "-j", ",".join(ids), check=False)
            if not p.stdout.strip():
                break
            time.sleep(0.3)
        else:
            raise AssertionError("jobs %s still queued after %d s" % (ids, timeout))
        states = {}
        for j in ids:
            p = self.run(_tool("scontrol"), "-o", "show", "job", j, check=False)
            for line in p.stdout.splitlines():
                f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                states[f.get("JobId", j) + ("_" + f["ArrayTaskId"] if "ArrayTaskId" in f else "")] = \
                    (f.get("JobState"), f.get("ExitCode"))
        return states

    def close(self):
        for p in reversed(self._procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self._procs = []
        subprocess.run([_tool("munged"), "-S", self.sock, "--stop"], capture_output=True, timeout=30)
