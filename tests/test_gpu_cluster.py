"""The cluster path on a machine without a GPU: device selection, threads per rank, mmcv's ops
routed to torch / torchvision kernels (checked against mmcv's own), the step-indexed DataLoader,
the srun launch of a multi-node job and the Slurm resources a site gets (the GPU smoke:
tests/test_gpu_smoke.py; the cost report: tests/test_cost.py)."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
import torch
from frozenbench.tasks.registry import BackboneRequest, get_task_type

from frozenbench.errors import UserError

from .conftest import run_cmd


# -- devices and threads -----------------------------------------------------------------------------


def test_device_selection(monkeypatch):
    from frozenbench.engine.device import select_device

    assert select_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert select_device("auto") == expected
    with pytest.raises(UserError, match="device must be one of auto, cpu, cuda, got 'gpu'"):
        select_device("gpu")
    if not torch.cuda.is_available():
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
        with pytest.raises(UserError, match="'cuda' requested but torch sees no GPU.*CUDA_VISIBLE_DEVICES=''"):
            select_device("cuda")


def test_threads_per_rank_share_the_jobs_cpus(monkeypatch):
    from frozenbench.engine.device import threads_per_rank

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert threads_per_rank(64, workers=6) == 2  # 64 CPUs / 8 ranks, less 6 loader workers each
    assert threads_per_rank(4, workers=0) == 1  # never 0
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")
    assert threads_per_rank(0) == 2  # 0: the Slurm allocation
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert threads_per_rank(0, workers=4) == 12


def test_device_record_names_the_device_and_its_memory():
    from frozenbench.engine.device import device_record

    record = device_record(torch.device("cpu"))
    assert record["device"] == "cpu" and record["gpu_peak_mb"] is None and record["peak_rss_mb"] > 0
    assert record["device_name"]


# -- mmcv ops ----------------------------------------------------------------------------------------


@pytest.mark.openmmlab
def test_routed_nms_keeps_what_mmcv_keeps():
    from frozenbench.openmmlab.ops import original_op, route_mmcv_ops

    route_mmcv_ops()
    import mmcv._ext as ext

    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        xy = torch.rand(300, 2, generator=gen) * 200
        boxes = torch.cat([xy, xy + torch.rand(300, 2, generator=gen) * 60 + 1], dim=1)
        scores = torch.rand(300, generator=gen)
        for threshold in (0.3, 0.5, 0.7):
            routed = ext.nms(boxes, scores, iou_threshold=threshold, offset=0)
            mmcv_own = original_op("nms")(boxes, scores, iou_threshold=threshold, offset=0)
            assert routed.tolist() == mmcv_own.tolist()


@pytest.mark.openmmlab
@pytest.mark.parametrize("aligned,sampling_ratio", [(True, 0), (True, 2), (False, 0)])
def test_routed_roi_align_matches_mmcv_forward_and_backward(aligned, sampling_ratio):
    from mmcv.ops import roi_align

    from frozenbench.openmmlab.ops import original_op, route_mmcv_ops

    route_mmcv_ops()
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 8, 40, 56, generator=gen, dtype=torch.float64).float()
    xy = torch.rand(30, 2, generator=gen) * torch.tensor([200.0, 140.0])
    rois = torch.cat(
        [torch.randint(0, 2, (30, 1), generator=gen).float(), xy, xy + torch.rand(30, 2, generator=gen) * 80 + 0.5],
        dim=1,
    )
    scale, size = 0.25, (7, 7)
    x = feats.clone().requires_grad_()
    out = roi_align(x, rois, size, scale, sampling_ratio, "avg", aligned)
    grad_out = torch.randn(out.shape, generator=gen)
    out.backward(grad_out)
    # mmcv's own CPU kernels, called as mmcv's RoIAlignFunction calls them
    ref = feats.new_zeros(out.shape)
    empty = feats.new_zeros(0)
    kwargs = dict(
        aligned_height=7,
        aligned_width=7,
        spatial_scale=scale,
        sampling_ratio=sampling_ratio,
        pool_mode=1,
        aligned=aligned,
    )
    original_op("roi_align_forward")(feats, rois, ref, empty, empty, **kwargs)
    ref_grad = torch.zeros_like(feats)
    original_op("roi_align_backward")(grad_out, rois, empty, empty, ref_grad, **kwargs)
    torch.testing.assert_close(out.detach(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad, ref_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.openmmlab
def test_check_ops_runs_every_route_and_unrouted_ops_name_themselves_on_cuda():
    from frozenbench.openmmlab.ops import ROUTES, check_ops, route_mmcv_ops

    assert check_ops("cpu") == {"nms": [3], "roi_align": [1, 2, 4, 4], "deformable_attention": [1, 80, 32]}
    route_mmcv_ops()
    import mmcv._ext as ext
    import mmcv.ops.multi_scale_deform_attn as deformable

    assert deformable.IS_CUDA_AVAILABLE is False  # its CUDA tensors take the pure-torch path
    unrouted = next(
        name for name in dir(ext) if not name.startswith("_") and name not in ROUTES and callable(getattr(ext, name))
    )
    cuda_like = type("CudaLike", (torch.Tensor,), {"is_cuda": property(lambda self: True)})
    fake_cuda = torch.empty(0).as_subclass(cuda_like)
    with pytest.raises(NotImplementedError, match=f"mmcv op '{unrouted}' has no CUDA kernel"):
        getattr(ext, unrouted)(fake_cuda)


# -- the step-indexed DataLoader ----------------------------------------------------------------------


class NoisyDataset(torch.utils.data.Dataset):
    """Each item draws from the three global RNGs, as OpenMMLab's random transforms do."""

    def __len__(self) -> int:
        return 13

    def __getitem__(self, index: int) -> dict:
        import random

        return {"index": index, "draws": [random.random(), float(np.random.rand()), float(torch.rand(()))]}


def _collect(workers: int, start: int, stop: int) -> list:
    from frozenbench.engine.data import StepBatches, train_batches
    from frozenbench.engine.options import split_batch

    steps = StepBatches(NoisyDataset(), list, split_batch(6, ranks=2), seed=5, rank=1)
    return list(train_batches(steps, start=start, stop=stop, workers=workers))


def test_step_batches_are_the_same_with_any_number_of_workers_and_from_any_start():
    serial = _collect(0, 0, 12)
    assert _collect(2, 0, 12) == serial
    assert _collect(2, 7, 12) == serial[7:]  # a resumed run asks for steps 7.. and gets exactly those
    # rank 1's half of an epoch's steps (a step: one micro-batch of a global batch of 6 over 2 ranks)
    assert all(len(step) == 1 and len(step[0]) == 3 for step in serial)
    assert len({item["index"] for step in serial[:2] for item in step[0]}) == 6
    assert serial[0] != serial[4]  # another epoch, another order and other draws


# -- launching ---------------------------------------------------------------------------------------


def _train_args(*extra: str):
    import argparse

    from frozenbench.commands.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--spec", "{}", "--checkpoint", "c.pth", "--mode", "frozen", "--run-dir", "r", *extra])


FAKE_SCONTROL = """#!/bin/sh
# scontrol as a two-node job sees it: `show job` names the allocation, `show hostnames` expands it
case "$1 $2" in
  "show job") echo "JobId=4242 JobName=train JobState=RUNNING NodeList=gpu-node-[1-2] NumNodes=2" ;;
  "show hostnames") [ "$3" = "gpu-node-[1-2]" ] && printf 'gpu-node-1\\ngpu-node-2\\n' ;;
esac
"""


def test_multi_node_training_starts_one_torchrun_per_node_through_srun(tmp_path, monkeypatch):
    """The launch as the Slurm job-step plugin runs it: every SLURM_* variable but the job id is gone,
    so the srun step gets its nodes, one task per node, its CPUs and GPUs from the job's own
    resources (--threads, --gpus-per-node), and the rendezvous host from `scontrol show job`."""
    from frozenbench.commands.train import launch_command

    (tmp_path / "scontrol").write_text(FAKE_SCONTROL)
    (tmp_path / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    args = _train_args(
        "--nodes", "2", "--nproc", "8", "--threads", "64", "--workers", "6", "--device", "cuda", "--gpus-per-node", "8"
    )
    stripped = {"SLURM_JOB_ID": "4242"}  # what the job-step plugin leaves
    command = launch_command(args, stripped)
    assert command[:7] == [
        "srun",
        "--nodes=2",
        "--ntasks=2",
        "--ntasks-per-node=1",
        "--cpus-per-task=64",
        "--kill-on-bad-exit=1",
        "--gpus-per-node=8",
    ]
    text = shlex.join(command)
    for part in (
        "torch.distributed.run --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d",
        "--rdzv_endpoint=gpu-node-1:29642",
        "--rdzv_id=frozenbench-4242",
        "frozenbench.cli train",
        "--device cuda --workers 6",
        "--threads 64",
    ):
        assert part in text, part
    # a variable the environment does carry (a hand-written batch script) is read without scontrol
    monkeypatch.setenv("PATH", "/nonexistent")
    plain = launch_command(args, {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu-node-7,gpu-node-9"})
    assert "--rdzv_endpoint=gpu-node-7:29642" in plain
    assert launch_command(args, {**stripped, "WORLD_SIZE": "16"}) is None  # a rank trains
    with pytest.raises(UserError, match="--nodes 2 needs a Slurm allocation"):
        launch_command(args, {})
    with pytest.raises(UserError, match="give the job's CPUs per node with --threads"):
        launch_command(_train_args("--nodes", "2"), stripped)
    single = launch_command(_train_args("--nproc", "2"), {})
    assert "--standalone" in single and "srun" not in single
    assert launch_command(_train_args(), {}) is None


# -- what a Slurm site gets ---------------------------------------------------------------------------


def _dry_run_jobs(workflow_copy, *args, env=None) -> dict[str, list[str]]:
    """rule name -> its job blocks (the lines snakemake prints for each job of a dry run)."""
    proc = run_cmd(["snakemake", "-n", *args], cwd=workflow_copy, check=True, timeout=300, env=env)
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith(("rule ", "localrule ")):
            current = [line]
            blocks.setdefault(line.split()[1].rstrip(":"), []).append(current)
        elif current is not None and line.startswith("    "):
            current.append(line.strip())
        else:
            current = None
    return {rule: ["\n".join(block) for block in jobs] for rule, jobs in blocks.items()}


@pytest.mark.slow  # ~12 s: a dry run of the paper study
def test_the_paper_study_asks_slurm_for_what_each_rule_needs(workflow_copy):
    env = {
        "FROZENBENCH_SLURM_ACCOUNT": "vision-lab",
        "FROZENBENCH_SLURM_GPU_PARTITION": "gpu-a100",
        "FROZENBENCH_SLURM_CPU_PARTITION": "cpu",
    }
    jobs = _dry_run_jobs(workflow_copy, "--cores", "128", "all_tables", "--configfile", "configs/paper.yaml", env=env)
    train = jobs["train_head"][0]
    assert "threads: 64" in train
    for part in (
        "gres=gpu:a100:8",
        "slurm_account=vision-lab",
        "slurm_partition=gpu-a100",
        "runtime=4320",
        "tasks_per_gpu=0",
    ):
        assert part in train, (part, train)
    assert "mpi=" not in train  # one node: the plugin's own srun step, torchrun inside it
    evaluate = jobs["evaluate_head"][0]
    assert "threads: 8" in evaluate and "gres=gpu:a100:1" in evaluate and "slurm_partition=gpu-a100" in evaluate
    prepare = jobs["prepare_dataset"][0]
    assert "threads: 32" in prepare and "slurm_partition=cpu" in prepare and "gres=" not in prepare
    # the commands the jobs run carry the device and loader settings
    commands = run_cmd(
        ["snakemake", "-n", "-p", "all_tables", "--configfile", "configs/paper.yaml"],
        cwd=workflow_copy,
        check=True,
        timeout=300,
    ).stdout
    train_line = next(line for line in commands.splitlines() if "frozenbench train" in line)
    assert "--nproc 8 --nodes 1 --gpus-per-node 8 --device cuda --workers 6" in train_line


def test_a_two_node_training_job_is_an_srun_job(workflow_copy):
    import yaml

    config = yaml.safe_load((workflow_copy / "configs" / "paper.yaml").read_text())
    config["compute"]["train"]["nodes"] = 2
    (workflow_copy / "configs" / "paper.yaml").write_text(yaml.safe_dump(config))
    jobs = _dry_run_jobs(workflow_copy, "all_tables", "--configfile", "configs/paper.yaml")
    train = jobs["train_head"][0]
    for part in ("nodes=2", "tasks=2", "mpi=srun", "gres=gpu:a100:8"):
        assert part in train, (part, train)


# -- which mmcv ops the heads reach ------------------------------------------------------------------

HEADS = {  # name -> (task, head, autocast)
    "mask_rcnn": ("detection", {"width": 32, "rpn_samples": 64, "rcnn_samples": 64}, True),
    "htc": ("detection", {"detector": "htc", "width": 32, "rpn_samples": 64, "rcnn_samples": 64}, False),
    "mask2former": ("segmentation", {"width": 32, "num_queries": 8, "num_points": 256}, True),
    "temporal": ("video", {"num_frames": 4, "num_blocks": 1, "width": 32}, False),
}
DATASET_OF = {"detection": "shapes-coco", "segmentation": "shapes-ade", "video": "shapes-k400"}


@pytest.mark.openmmlab
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_head_reaches_only_routed_mmcv_ops(name, tmp_path):
    """One training step and an evaluation of each head (two of them under bf16 autocast) call no
    mmcv op outside the routes: on a GPU they would run on torch / torchvision kernels."""
    import importlib

    from mmengine.dataset import pseudo_collate

    from frozenbench.data.synth import synthesize
    from frozenbench.engine.device import autocast
    from frozenbench.engine.loop import TrainOptions, train
    from frozenbench.openmmlab.ops import ROUTES, ext_calls
    from frozenbench.openmmlab.training import wrap_for_training

    from .test_synth import tiny_spec

    kind, head, bf16 = HEADS[name]
    task = importlib.import_module(f"frozenbench.tasks.{kind}")
    extra = {"num_frames": 8} if kind == "video" else {"image_size": 64, "num_train": 4, "num_val": 2}
    root = tmp_path / DATASET_OF[kind]
    synthesize(tiny_spec(DATASET_OF[kind], **extra), root)
    options = {"num_frames": 4} if kind == "video" else {}
    num_classes = len(task.class_names(root))
    torch.manual_seed(0)
    model = task.build_model(
        get_task_type(kind).make_head(head),
        BackboneRequest(None, 64, frozen=True, arch="convstem_swin_tiny"),
        num_classes,
    )
    before = ext_calls()
    train(
        wrap_for_training(model),
        task.build_dataset(root, "train", 64, train=True, **options),
        pseudo_collate,
        tmp_path / "run",
        TrainOptions(steps=2, batch_size=2, warmup_steps=1, checkpoint_every=2, log_every=1, autocast_bf16=bf16),
        seed=0,
        log=lambda m: None,
    )
    with autocast(torch.device("cpu"), bf16):
        metrics = task.evaluate(model, task.build_dataset(root, "val", 64, train=False, **options), num_classes)
    assert metrics
    called = {op for op, count in ext_calls().items() if count > before.get(op, 0)}
    assert called <= set(ROUTES), f"unrouted mmcv ops: {sorted(called - set(ROUTES))}"
    if kind == "detection":
        assert called == {"nms", "roi_align_forward", "roi_align_backward"}


# -- precision --------------------------------------------------------------------------------------


def test_fp32_islands_compute_in_fp32_inside_bf16_autocast():
    """A detector's box heads under bf16 autocast: a 1000-px coordinate in bf16 is off by up to 4 px."""
    from frozenbench.openmmlab.precision import run_in_fp32

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def predict(self, feats, scale=1.0):
            return [self.fc(f) * scale for f in feats]

    torch.manual_seed(0)
    plain, islanded = Head(), Head()
    islanded.load_state_dict(plain.state_dict())
    run_in_fp32(islanded, ("predict", "loss"))  # a method the module lacks is skipped
    feats = [torch.randn(3, 4) * 1000]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_out = plain.predict([f.bfloat16() for f in feats])[0]
        fp32_out = islanded.predict([f.bfloat16() for f in feats])[0]  # bf16 features in, fp32 math
    assert bf16_out.dtype == torch.bfloat16 and fp32_out.dtype == torch.float32
    exact = plain.predict([f.bfloat16().float() for f in feats])[0]
    torch.testing.assert_close(fp32_out, exact)
    assert (bf16_out.float() - exact).abs().max() > 0.5  # what the island saves
