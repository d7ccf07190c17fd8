"""torchrun survives the first build of the decoded cache: rank 0 builds it while the other ranks wait in a
gloo barrier of their own, whose timeout fits the build, not in main.py's process group (NCCL's 10-minute
timeout on a GPU). 2 gloo processes, the group's timeout scaled down to 2 s, a build 5 s slower."""
import os
import re
import socket
import subprocess
import sys

from tools import CODE_DIR


def test_ranks_wait_for_a_cache_build_longer_than_the_process_groups_timeout(demo_data, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
         "-m", "tools.tests.ddp_cache_wait_run", demo_data, "-b", "8", "-j", "0", "--cache-dir", str(tmp_path / "cache")],
        cwd=CODE_DIR, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1", TIMEOUT_S="2", BUILD_S="5"))
    assert res.returncode == 0, "\n".join(ln for ln in res.stderr.splitlines() if "Error" in ln)[-3000:]
    waits = dict(re.findall(r"rank (\d): loaders after ([\d.]+) s, a batch of 4, DecodedCacheDataset", res.stdout))
    assert set(waits) == {"0", "1"}, res.stdout
    assert float(waits["1"]) > 4, "rank 1 waited for the 5 s build, well past the 2 s timeout"
