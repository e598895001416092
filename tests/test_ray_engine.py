"""`tagcons embed --engine ray` on a real two-node Ray cluster: the same cache as the local engine.

Few tests on purpose (a cluster takes a while to start): one run checks equality with the local
engine, the failure records and that a rerun encodes only the new keys. The bad-input checks need
no cluster.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from embed_helpers import assert_same_contents, cache_contents, embed, make_image_set
from ray_helpers import TwoNodeCluster, embed_command, free_port, ray_env

from tagcons.cli import main as cli_main

pytestmark = pytest.mark.ray
RUN_TIMEOUT = 600


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray.data")
    ray_cluster = TwoNodeCluster()
    try:
        yield ray_cluster.start()
    finally:
        ray_cluster.stop()
        assert not ray_cluster.living()


def run_ray_embed(pairs, images, out, cluster) -> str:
    command = embed_command(pairs, images, out, cluster.address)
    done = subprocess.run(command, env=cluster.env(), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_a_two_node_cluster_gives_the_local_engines_cache_and_a_rerun_encodes_only_new_keys(tmp_path, cluster):
    pairs, images = make_image_set(tmp_path, n_images=8)
    (images / "cat_03.png").write_bytes(b"not an image")
    embed(pairs, images, tmp_path / "local.h5")
    run_ray_embed(pairs, images, tmp_path / "ray.h5", cluster)
    assert_same_contents(cache_contents(tmp_path / "local.h5"), cache_contents(tmp_path / "ray.h5"))
    assert cache_contents(tmp_path / "ray.h5")["failed"].keys() == {"cat_03.png"}

    pairs, images = make_image_set(tmp_path, n_images=10)  # the same 8 (one mended) and 2 new ones
    out = run_ray_embed(pairs, images, tmp_path / "ray.h5", cluster)
    assert "images 3 new, 7 cached, 0 failed" in out  # the 2 new and the mended file; nothing else
    embed(pairs, images, tmp_path / "local.h5")
    assert_same_contents(cache_contents(tmp_path / "local.h5"), cache_contents(tmp_path / "ray.h5"))


def test_an_encoder_actor_killed_mid_run_is_restarted_and_the_cache_equals_a_clean_run(tmp_path, cluster):
    pairs, images = make_image_set(tmp_path, n_images=24)
    embed(pairs, images, tmp_path / "local.h5")
    command = embed_command(pairs, images, tmp_path / "ray.h5", cluster.address)
    process = subprocess.Popen(command, env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = kill_once(cluster, "ImageEncoder", process)
    out, err = process.communicate(timeout=RUN_TIMEOUT)
    assert killed, "the encoder actor never appeared: nothing was killed"
    assert process.returncode == 0, err[-4000:]
    assert "images 24 new" in out
    assert_same_contents(cache_contents(tmp_path / "local.h5"), cache_contents(tmp_path / "ray.h5"))


def kill_once(cluster, marker: str, driver: subprocess.Popen) -> bool:
    """SIGKILL the first process of `cluster` titled `marker` as soon as it appears (the actor is then
    starting or encoding; the driver waits for it either way, so the kill always lands mid-run)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while driver.poll() is None and time.monotonic() < deadline:
        for pid in cluster.processes_named(marker):
            try:
                os.kill(pid, signal.SIGKILL)
                return True
            except ProcessLookupError:
                continue
        time.sleep(0.05)
    return False


def test_an_unreachable_ray_address_is_one_line_and_exit_2(tmp_path, capsys):
    pytest.importorskip("ray.data")
    pairs, images = make_image_set(tmp_path, n_images=2)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    args = ["embed", "--data", str(pairs), "--images", str(images), "--backbone", "tiny"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*args, "--out", str(tmp_path / "c.h5"), "--engine", "ray", "--ray-address", address])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and address in err and "ray start --head" in err
    assert not (tmp_path / "c.h5").exists()


def test_without_ray_installed_the_error_names_the_extra(tmp_path):
    pairs, images = make_image_set(tmp_path, n_images=2)
    script = (
        "import sys; sys.modules['ray'] = None\n"  # import ray now fails as if it were not installed
        "from tagcons.cli import main\n"
        f"main(['embed', '--data', {str(pairs)!r}, '--images', {str(images)!r}, '--backbone', 'tiny', "
        f"'--out', {str(tmp_path / 'c.h5')!r}, '--engine', 'ray'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=ray_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "tagcons[ray]" in done.stderr


def test_compile_is_refused_with_the_ray_engine_before_any_work(tmp_path, capsys):
    pairs, images = make_image_set(tmp_path, n_images=2)
    args = ["embed", "--data", str(pairs), "--images", str(images), "--backbone", "tiny"]
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*args, "--out", str(tmp_path / "c.h5"), "--engine", "ray", "--compile"])
    assert exit_info.value.code == 2 and "--compile" in capsys.readouterr().err
    assert not (tmp_path / "c.h5").exists()
