"""Batch-sharded inputs under explicit (jax.make_mesh) and auto (jax.sharding.Mesh) axes.

Runs in a subprocess with four host CPU devices
(``--xla_force_host_platform_device_count=4``), since the device count is fixed
when JAX starts.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    import dssim_mae_jax as dmj

    assert jax.device_count() == 4
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 3)).astype(np.float32)
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)
    big = rng.random((4, 40, 40, 1)).astype(np.float32)
    zhao = dmj.make_loss("zhao-mix", filter_size=11, reduction="mean")
    ms = lambda a, b: dmj.ms_ssim(a, b, max_val=1.0, filter_size=3)
    expected = {
        "ssim": dmj.ssim(x, y, max_val=1.0),
        "grad": jax.grad(lambda a: dmj.ssim(a, y, max_val=1.0).sum())(x),
        "jvp": jax.jvp(lambda a: dmj.ssim(a, y, max_val=1.0), (x,), (y,))[1],
        "zhao": jax.grad(lambda a: zhao(a, y)[0])(x),
        "ms": ms(big, 0.9 * big),
    }
    meshes = {
        "explicit": jax.make_mesh((4,), ("batch",)),
        "auto": jax.sharding.Mesh(np.array(jax.devices()), ("batch",)),
    }
    for kind, mesh in meshes.items():
        sharding = NamedSharding(mesh, P("batch"))
        with jax.set_mesh(mesh):
            xs, ys = jax.device_put(x, sharding), jax.device_put(y, sharding)
            bs = jax.device_put(big, sharding)
            got = {
                "ssim": jax.jit(lambda a, b: dmj.ssim(a, b, max_val=1.0))(xs, ys),
                "grad": jax.jit(jax.grad(lambda a, b: dmj.ssim(a, b, max_val=1.0).sum()))(xs, ys),
                "jvp": jax.jit(
                    lambda a, b: jax.jvp(lambda p: dmj.ssim(p, b, max_val=1.0), (a,), (b,))[1]
                )(xs, ys),
                "zhao": jax.jit(
                    jax.grad(lambda a, b: zhao(a, b)[0])
                )(xs, ys),
                "ms": jax.jit(lambda a: ms(a, 0.9 * a))(bs),
            }
            for name in ("mae", "psnr"):
                fn = getattr(dmj, name)
                jax.jit(lambda a, b, fn=fn: fn(a, b, max_val=1.0))(xs, ys).block_until_ready()
        for name, value in got.items():
            np.testing.assert_allclose(
                np.asarray(value), np.asarray(expected[name]), rtol=2e-5, atol=1e-7,
                err_msg=f"{kind} {name}",
            )
    print("ok")
    """
)


def test_batch_sharded_inputs_under_explicit_and_auto_meshes():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    root = pathlib.Path(__file__).parent.parent
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", SCRIPT],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("ok")
