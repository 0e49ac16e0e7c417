"""How much of a PPO minibatch is OpenCL kernel time: clnet.demos.ppo's Trainer.learn with
every kernel launch timed by OpenCL profiling events.

    python tools/ppo_kernel_times.py --backend opencl:0:0 --network sb3-default

Prints the wall time per minibatch, the kernels' share of it, and each kernel's time per
minibatch with its launch geometry. What is not kernel time is the host's: the heads, the
loss, Adam, laying the weights out, reading the gradients back, and the runtime's cost per
command and per wait. A development tool: it replaces pyopencl's CommandQueue with one that
profiles before clnet creates its queue, so it runs in a process of its own.
"""
from __future__ import annotations

import argparse
import collections
import time

import pyopencl as cl


def _profile_every_queue():
    """Make every CommandQueue created from here on a profiling one, and record each kernel
    launched through clnet's BoundKernel with its event."""
    base = cl.CommandQueue

    class ProfilingQueue(base):
        def __init__(self, context, device=None, properties=None):
            super().__init__(context, device, properties=cl.command_queue_properties.PROFILING_ENABLE)

    cl.CommandQueue = ProfilingQueue
    from clnet.opencl import args

    launches = []
    launch = args.BoundKernel.__call__

    def timed(self, queue, global_size, local_size, **values):
        event = launch(self, queue, global_size, local_size, **values)
        launches.append((self.kernel.function_name, tuple(global_size), tuple(local_size or ()), event))
        return event

    args.BoundKernel.__call__ = timed
    return launches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="opencl:0:0")
    parser.add_argument("--network", default="sb3-default", choices=("sb3-default", "zoo"))
    parser.add_argument("--rollouts", type=int, default=3, help="rollouts learned while timing (20 minibatches each)")
    args = parser.parse_args()
    launches = _profile_every_queue()
    from clnet.demos import ppo

    trainer = ppo.Trainer(256 * (args.rollouts + 2), 0, 8, args.network, args.backend)
    with ppo._single_threaded_blas():
        trainer.collect()
        trainer.learn()   # builds the kernels and the buffers: not timed
        trainer.collect()
        launches.clear()
        start = time.perf_counter()
        for _ in range(args.rollouts):
            trainer.learn()
        wall = time.perf_counter() - start
    minibatches = args.rollouts * trainer.hp["n_epochs"]
    per_kernel = collections.defaultdict(lambda: [0, 0.0])
    for name, grid, local, event in launches:
        entry = per_kernel[(name, grid, local)]
        entry[0] += 1
        entry[1] += (event.profile.end - event.profile.start) * 1e-9
    kernels = sum(seconds for _, seconds in per_kernel.values())
    print(f"{trainer.policy.backend.spec}, network {args.network!r}: {wall / minibatches * 1e3:.2f} ms per minibatch, "
          f"kernels {kernels / minibatches * 1e3:.2f} ms ({100 * kernels / wall:.0f}%)")
    for (name, grid, local), (count, seconds) in sorted(per_kernel.items(), key=lambda kv: -kv[1][1]):
        print(f"  {seconds / minibatches * 1e3:7.3f} ms  {count / minibatches:4.1f} launches  {name} "
              f"global {grid} local {local}")
    trainer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
