"""One process of a data-parallel run: train a config to an epoch, alone or as one rank of a gang.

    python bench/gang_rank.py CONFIG UNTIL OUT [--resume CKPT] [--rank R --world K --address HOST:PORT]

``train(config, until, out, ranks)`` starts the processes and returns rank 0's result.

Writes OUT (torch.save): the trained epochs' metrics and, on rank 0 or alone, the
model's changing state, and its checkpoint at OUT.ckpt (tests/test_data_parallel.py
compares them; bench/data_parallel.py times them).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from model.config import RunConfig  # noqa: E402
from model.train import Trainer, read_checkpoint  # noqa: E402


def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def train(config: Path, until: int, out: Path, ranks: int = 1, resume: Path | None = None,
          timeout: float = 300, here: bool = False) -> dict:
    """Train to epoch ``until`` alone or on ``ranks`` local processes; rank 0's (or the only) result.

    ``here``: train alone in this process (tests compare against it without paying a
    process's torch start-up); a gang's ranks are always processes of their own."""
    if here and ranks == 1:
        return run_rank(config, until, f"{out}.0", resume)
    extra = ["--resume", str(resume)] if resume else []
    address = free_address()
    procs = []
    for rank in range(ranks):
        gang = ["--rank", str(rank), "--world", str(ranks), "--address", address] if ranks > 1 else []
        procs.append(subprocess.Popen([sys.executable, __file__, str(config), str(until), f"{out}.{rank}",
                                       *extra, *gang],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        output, _ = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"rank exited {p.returncode}:\n{output[-3000:]}")
    return torch.load(f"{out}.0", weights_only=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("until", type=int)
    parser.add_argument("out")
    parser.add_argument("--resume")
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--world", type=int, default=1)
    parser.add_argument("--address")
    args = parser.parse_args()
    gang = None
    if args.world > 1:
        from model.data_parallel import join

        gang = join(args.address, args.rank, args.world, timeout_s=120)
    run_rank(args.config, args.until, args.out, args.resume, gang)
    if gang is not None:
        from model.data_parallel import leave

        leave()


def run_rank(config, until: int, out: str, resume=None, gang=None) -> dict:
    """Train ``config`` to epoch ``until`` (as ``gang``'s rank, or alone); write and return OUT."""
    trainer = Trainer(RunConfig.load(config), device="cpu", gang=gang)
    if resume:
        trainer.load_state_dict(read_checkpoint(resume))  # today's checkpoint format
    result = {"metrics": trainer.fit(until)}
    if gang is None or gang.leader:
        result["model"] = {k: v.clone() for k, v in trainer.model.changing_state_dict().items()}
        trainer.save_checkpoint(f"{out}.ckpt")
    torch.save(result, out)
    return result


if __name__ == "__main__":
    main()
