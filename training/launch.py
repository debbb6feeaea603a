"""How the run was launched, read from the environment before TrainingArguments sets up devices.

Measured on a 2-core CPU machine without GPU (accelerate 1.16, transformers 5.25), tiny config, 2 steps:
- `accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 2 --cpu train_hf.py ...` starts ONE
  process: with `--cpu` accelerate always uses its simple launcher, which runs several CPU processes only through MPI
  (`--mpirun_hostfile`); it sets MASTER_ADDR/MASTER_PORT and nothing else. `launch_problem` refuses that launch.
- the same line without `--cpu` starts 2 processes through torchrun, but each one, finding no GPU, set itself up as
  a world of 1: two independent runs writing one output dir. With `use_cpu` they form one world of 2 (gloo):
  `launch_defaults` sets `use_cpu` when a multi-process launch finds no accelerator.
- `torchrun --nproc_per_node 2 train_hf.py ... --use_cpu true` gives the same world of 2.
"""

import logging
import os

logger = logging.getLogger(__name__)

MPI_WORLD = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


def _true(value: str | None) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def launch_problem(env=None) -> str | None:
    """Why this launch cannot give the processes it asked for (None when it can)."""
    env = os.environ if env is None else env
    asked_several = "MASTER_ADDR" in env and "MASTER_PORT" in env  # accelerate's simple launcher, num_processes > 1
    started_one = "WORLD_SIZE" not in env and not any(k in env for k in MPI_WORLD)
    if _true(env.get("ACCELERATE_USE_CPU")) and asked_several and started_one:
        return ("`accelerate launch --cpu` (or use_cpu: true in the accelerate config) with --num_processes > 1 starts "
                "a single process: accelerate runs several CPU processes only through MPI (--mpirun_hostfile). "
                "Drop --cpu: `accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 2 "
                "train_hf.py ...` runs 2 CPU processes on a machine without GPU, as does "
                "`torchrun --nproc_per_node 2 train_hf.py ... --use_cpu true`")
    return None


def sharding_without_accelerator(env=None) -> str | None:
    """What an FSDP / DeepSpeed accelerate config gives on a machine without GPU (None when it is not that case):
    accelerate shards only on GPUs, so on the CPU each process holds and trains the whole model, as under DDP."""
    env = os.environ if env is None else env
    asked = (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
    kinds = [kind for kind, var in asked if _true(env.get(var))]
    if not kinds:
        return None
    import torch

    if torch.accelerator.is_available():
        return None
    return (f"the accelerate config asks for {kinds[0]}, which accelerate runs on GPUs only: on this machine (no GPU) "
            f"{env.get('WORLD_SIZE', '1')} process(es) each hold and train the whole model, as plain data parallel "
            "(nothing is sharded, no memory is saved). Use configs/accelerate/ddp.yaml to say so, or a GPU machine")


def launch_defaults(env=None) -> dict:
    """TrainingArguments defaults the launch needs: use_cpu for a multi-process launch on a machine without GPU."""
    env = os.environ if env is None else env
    sharding = sharding_without_accelerator(env)
    if sharding and env.get("RANK", "0") == "0":  # once, not once per process
        logger.warning(sharding)
    if int(env.get("WORLD_SIZE", "1")) > 1:
        import torch

        if not torch.accelerator.is_available():
            logger.info("%s processes and no accelerator: use_cpu=True (each would otherwise train alone)",
                        env["WORLD_SIZE"])
            return {"use_cpu": True}
    return {}


def end_distributed() -> None:
    """At the end of a multi-process run: wait for every rank (rank 0 may still write the model card), then take the
    process group down. A rank that exits with the group still up can abort in its C++ teardown ("terminate called
    without an active exception", SIGABRT), which fails a finished run: seen with 2 gloo processes on a busy CPU."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
