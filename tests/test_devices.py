"""Devices reached through the user's own OpenSSH client: a real sshd on 127.0.0.1 (tests/sshd.py) and
``local``; every failure a one-line DeviceError naming the device."""

from __future__ import annotations

import pytest

from edgebench.devices import Device, DeviceError


@pytest.fixture(params=["ssh", "local"])
def device(request, server) -> Device:
    if request.param == "local":
        return Device.parse("local")
    return Device.parse(server.url, ssh_config=server.client_config)


def test_device_urls_parse_and_bad_ones_are_refused():
    d = Device.parse("ssh://pi@raspberrypi.local:2222")
    assert (d.user, d.host, d.port, d.name) == ("pi", "raspberrypi.local", 2222, "pi@raspberrypi.local-2222")
    assert Device.parse("ssh://[::1]").host == "::1" and Device.parse("ssh://gw").user is None
    for bad in ("pi@host", "ssh://host:99999", "ssh://a b", "ssh://h;rm -rf /", "http://host"):
        with pytest.raises(DeviceError):
            Device.parse(bad)


def test_a_folder_ships_runs_and_comes_back(device, tmp_path):
    src = tmp_path / "bundle"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a file; with 'quotes'.txt").write_text("hello")
    remote = str(tmp_path / "remote" / "bundle")
    device.put(src, remote, timeout=30)
    done = device.run(["sh", "-c", "cat \"sub/a file; with 'quotes'.txt\" > out.txt"], 30, cwd=remote)
    assert done.returncode == 0, done.stderr
    assert device.get(f"{remote}/out.txt", timeout=30) == b"hello"
    assert not (tmp_path / "remote" / "bundle.partial").exists()
    with pytest.raises(DeviceError, match="larger than 3 bytes"):
        device.get(f"{remote}/out.txt", timeout=30, limit=3)
    with pytest.raises(DeviceError, match="cannot read"):
        device.get(f"{remote}/missing.json", timeout=30)


def test_a_command_past_its_timeout_is_one_line(device):
    with pytest.raises(DeviceError, match="no answer within 0.5 s"):
        device.run(["sleep", "5"], timeout=0.5)


def test_an_unreachable_device_and_a_refused_key_are_one_line(server):
    closed = Device.parse(f"ssh://{server.user}@127.0.0.1:1", ssh_config=server.client_config)
    with pytest.raises(DeviceError, match=r"ssh://.*127.0.0.1:1: unreachable"):
        closed.run(["true"], timeout=30)
    refused = Device.parse(server.url, ssh_config=str(server.folder / "other_config"))
    with pytest.raises(DeviceError, match="the key was refused"):
        refused.run(["true"], timeout=30)
