from __future__ import annotations

from pathlib import Path

import pytest

from agent import config
from agent.errors import ConfigError
from agent.secret import Credentials, Secret

GOOD = """
[agent]
state_dir = "/tmp/agent-state"

[api]
listen = "0.0.0.0:9000"
token = "tok-123"

[discovery]
multicast = false
subnets = ["192.0.2.0/28"]
probe = ["192.0.2.5:80"]
interval = 120

[[credentials.default]]
username = "admin"
password = "pw-1"

[[credentials.camera]]
match = "192.0.2.5"
username = "viewer"
password = "pw-2"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_full_file_is_read(tmp_path: Path) -> None:
    cfg = config.load(_write(tmp_path, GOOD), env={})
    assert cfg.state_dir == Path("/tmp/agent-state")
    assert (cfg.api_host, cfg.api_port) == ("0.0.0.0", 9000)
    assert cfg.api_token == Secret("tok-123")
    assert not cfg.discovery.multicast
    assert cfg.discovery.subnets == ("192.0.2.0/28",)
    assert cfg.discovery.probe == (("192.0.2.5", 80),)
    assert cfg.discovery.interval == 120
    assert cfg.default_credentials == (Credentials("admin", "pw-1"),)
    assert cfg.camera_credentials["192.0.2.5"] == Credentials("viewer", "pw-2")
    assert "pw-1" not in repr(cfg) and "tok-123" not in repr(cfg)


def test_defaults_when_the_default_file_is_missing(tmp_path: Path) -> None:
    cfg = config.load(None, env={"CAMERA_AGENT_CONFIG_UNSET": "1"})
    assert cfg.api_host == "127.0.0.1"
    assert cfg.api_token is None


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[agent]\nstate_dir = 5\n", "agent.state_dir must be of type str"),
        ("[api]\nlisten = 'nohost'\n", "HOST:PORT"),
        ("[discovery]\nmulticast = 1\n", "discovery.multicast must be of type bool"),
        ("[discovery]\ninterval = true\n", "discovery.interval"),
        ("[discovery]\ninterval = 1\n", "10..86400"),
        ("[discovery]\nsubnets = ['not-a-net']\n", "discovery.subnets"),
        ("[discovery]\nbogus = 1\n", "unknown setting"),
        ("[nonsense]\n", "unknown setting"),
        ("[[credentials.default]]\nusername = 'a'\n", "username and a password"),
        ("[[credentials.camera]]\nusername = 'a'\npassword = 'b'\n", "match"),
        ("this is = = not toml", "not valid TOML"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(_write(tmp_path, text), env={})


def test_env_and_flags_override(tmp_path: Path) -> None:
    cfg = config.load(
        _write(tmp_path, GOOD),
        env={"CAMERA_AGENT_STATE_DIR": "/tmp/other", "CAMERA_AGENT_API_TOKEN": "env-tok"},
    )
    assert cfg.state_dir == Path("/tmp/other")
    assert cfg.api_token == Secret("env-tok")
    cfg = config.with_flags(
        cfg,
        api=("127.0.0.1", 8781),
        probe=[("192.0.2.9", 8000), ("192.0.2.5", 80)],
        subnets=["198.51.100.0/30"],
        username="root",
        password="pw-3",
    )
    assert cfg.api_port == 8781
    assert cfg.discovery.probe == (("192.0.2.5", 80), ("192.0.2.9", 8000))
    assert cfg.discovery.subnets == ("192.0.2.0/28", "198.51.100.0/30")
    assert cfg.default_credentials[0] == Credentials("root", "pw-3")
    assert cfg.default_credentials[1] == Credentials("admin", "pw-1")


def test_non_loopback_api_needs_a_token(tmp_path: Path) -> None:
    cfg = config.load(_write(tmp_path, "[api]\nlisten = '0.0.0.0:8780'\n"), env={})
    with pytest.raises(ConfigError, match="token"):
        config.validate(cfg)
    assert config.validate(config.with_flags(cfg, api=("::1", 8780))).api_host == "::1"


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="larger"):
        config.load(_write(tmp_path, "#" * (config.MAX_CONFIG_BYTES + 10)), env={})


def test_cloud_settings(tmp_path: Path) -> None:
    text = (
        "[cloud]\nactivation_url = 'https://act.example.net/'\n"
        "pin_sha256 = '" + "AB:" * 31 + "AB'\n"
    )
    cfg = config.load(_write(tmp_path, text), env={})
    assert cfg.cloud.activation_url == "https://act.example.net"
    assert cfg.cloud.pin_sha256 == "ab" * 32
    with pytest.raises(ConfigError, match="http"):
        config.load(_write(tmp_path, "[cloud]\nactivation_url = 'ftp://x'\n"), env={})
    with pytest.raises(ConfigError, match="credentials"):
        config.with_flags(cfg, activation_url="http://u:p@127.0.0.1:8080")
    cfg = config.with_flags(cfg, activation_url="http://127.0.0.1:8080")
    assert cfg.cloud.activation_url == "http://127.0.0.1:8080"


def test_activation_hosts(tmp_path: Path) -> None:
    assert config.load(_write(tmp_path, ""), env={}).cloud.activation_hosts == ()
    text = "[cloud]\nactivation_hosts = ['Example.NET.', 'bücher.example', '192.0.2.7']\n"
    cfg = config.load(_write(tmp_path, text), env={})
    assert cfg.cloud.activation_hosts == ("example.net", "xn--bcher-kva.example", "192.0.2.7")
    for bad, message in (
        ("activation_hosts = 'example.net'", "must be of type list"),
        ("activation_hosts = [1]", "list of strings"),
        ("activation_hosts = ['https://example.net']", "'https://example.net' is not a host"),
        ("activation_hosts = ['*.example.net']", "not a host name"),
        ("activation_hosts = ['']", "not a host name"),
    ):
        with pytest.raises(ConfigError, match=message):
            config.load(_write(tmp_path, f"[cloud]\n{bad}\n"), env={})
    env = {"CAMERA_AGENT_ACTIVATION_HOSTS": " Example.NET., cloud.example.org ,"}
    cfg = config.load(_write(tmp_path, text), env=env)
    assert cfg.cloud.activation_hosts == ("example.net", "cloud.example.org")
    assert (
        config.load(
            _write(tmp_path, text), env={"CAMERA_AGENT_ACTIVATION_HOSTS": ""}
        ).cloud.activation_hosts
        == ()
    )
    with pytest.raises(ConfigError, match="not a host"):
        config.load(_write(tmp_path, ""), env={"CAMERA_AGENT_ACTIVATION_HOSTS": "https://x.net"})


RELAY = """
[tunnel]
idle_timeout = 30
open_burst = 4
open_rate = 0.5

[restream]
listen = "127.0.0.1:8554"
username = "nvr"
password = "long-enough"

[[push]]
camera = "cam-1"
url = "rtmp://127.0.0.1/live/key-123"

[[push]]
camera = "cam-2"
url = "srt://127.0.0.1:9000"
stream = "sub"
"""


def test_relay_settings(tmp_path: Path) -> None:
    cfg = config.load(_write(tmp_path, RELAY), env={})
    assert cfg.tunnel == config.TunnelConfig(idle_timeout=30.0, open_burst=4, open_rate=0.5)
    assert (cfg.restream.host, cfg.restream.port, cfg.restream.username) == (
        "127.0.0.1",
        8554,
        "nvr",
    )
    assert cfg.restream.password == Secret("long-enough")
    assert [(p.camera, p.stream) for p in cfg.push] == [("cam-1", "main"), ("cam-2", "sub")]
    assert "key-123" not in repr(cfg.push)  # the URL may hold a stream key
    assert cfg.push[0].url.reveal() == "rtmp://127.0.0.1/live/key-123"


def test_relays_are_off_by_default() -> None:
    cfg = config.AgentConfig()
    assert cfg.restream.host is None
    assert cfg.push == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tunnel]\nidle_timeout = 1\n", "tunnel.idle_timeout"),
        ("[tunnel]\nopen_rate = 0\n", "tunnel.open_rate"),
        ("[tunnel]\nsurprise = 1\n", "[tunnel]"),
        ('[restream]\nlisten = "nowhere"\n', "restream.listen"),
        ('[restream]\npassword = "short"\n', "restream.password"),
        ('[restream]\nusername = "a:b"\n', "restream.username"),
        ('[[push]]\ncamera = "c"\nurl = "http://x/y"\n', "push.url"),
        ('[[push]]\nurl = "rtmp://x/y"\n', "camera"),
        ('push = "rtmp://x"\n', "push must be an array"),
    ],
)
def test_bad_relay_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        config.load(_write(tmp_path, text), env={})


def test_health_settings(tmp_path: Path) -> None:
    cfg = config.load(
        _write(
            tmp_path,
            '[health]\ninterval = 5\nthermal_zone = "/sys/class/thermal/thermal_zone1/temp"\n'
            'throttled = "/sys/x/get_throttled"\nlog_dir = "/var/log/cams"\n',
        ),
        env={},
    )
    assert cfg.health_interval == 5.0
    assert cfg.thermal_zone == Path("/sys/class/thermal/thermal_zone1/temp")
    assert cfg.throttled_path == Path("/sys/x/get_throttled")
    assert cfg.log_dir == Path("/var/log/cams")
    with pytest.raises(ConfigError, match=r"health\.interval"):
        config.load(_write(tmp_path, "[health]\ninterval = 0\n"), env={})


def test_hardware_profile_setting() -> None:
    assert config.from_mapping({"hardware": {"profile": "raspberry-pi-4"}}).hardware_profile == (
        "raspberry-pi-4"
    )
    assert config.from_mapping({}).hardware_profile is None
    for bad in ({"profile": ""}, {"profile": 4}, {"model": "x"}):
        with pytest.raises(ConfigError):
            config.from_mapping({"hardware": bad})


CAMERAS = """
[[camera]]
name = "Garage"
rtsp_url = "rtsp://admin:s%40cret-1@192.0.2.70:554/stream1"
sub_url = "rtsp://192.0.2.70:554/stream2"
snapshot_url = "http://192.0.2.70/snap.jpg"

[[camera]]
rtsp_url = "rtsp://192.0.2.71/live"
username = "viewer"
password = "pw-2"
"""


def test_camera_tables_split_credentials_from_urls(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(CAMERAS)
    garage, plain = config.load(path, env={}).cameras
    assert garage.name == "Garage"
    assert garage.rtsp_url == "rtsp://192.0.2.70:554/stream1"
    assert garage.sub_url == "rtsp://192.0.2.70:554/stream2"
    assert garage.snapshot_url == "http://192.0.2.70/snap.jpg"
    assert garage.credentials == Credentials("admin", Secret("s@cret-1"))
    assert "cret" not in repr(garage)
    assert plain.name == "" and plain.sub_url is None and plain.snapshot_url is None
    assert plain.credentials == Credentials("viewer", Secret("pw-2"))
    assert config.AgentConfig().cameras == ()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('rtsp_url = "http://192.0.2.70/x"', "rtsp_url must be a rtsp:// URL"),
        ('rtsp_url = "rtsp://u:hidden-pw@"', "rtsp_url must be a rtsp:// URL with a host"),
        ('rtsp_url = "rtsp://192.0.2.70:70000/x"', "rtsp_url is not a valid URL"),
        ("rtsp_url = 5", "rtsp_url must be a non-empty string"),
        ('name = "x"', "rtsp_url must be a non-empty string"),
        ('rtsp_url = "rtsp://192.0.2.70/x"\nsub_url = "srt://192.0.2.70/x"', "sub_url must be"),
        ('rtsp_url = "rtsp://192.0.2.70/x"\nsnapshot_url = "rtsp://a/x"', "snapshot_url must be"),
        ('rtsp_url = "rtsp://192.0.2.70/x"\npassword = "hidden-pw"', "password needs a username"),
        ('rtsp_url = "rtsp://192.0.2.70/x"\nmatch = "1"', "unknown setting(s) in [[camera]] #1"),
        ('rtsp_url = "rtsp://192.0.2.70/x x"', "must not contain spaces"),
    ],
)
def test_bad_camera_tables_are_named_without_secrets(
    tmp_path: Path, table: str, message: str
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f"[[camera]]\n{table}\n")
    with pytest.raises(ConfigError, match=r"\[\[camera\]\] #1") as err:
        config.load(path, env={})
    assert message in str(err.value)
    assert "hidden-pw" not in str(err.value)


def test_camera_must_be_an_array_of_tables(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('camera = "rtsp://192.0.2.70/x"\n')
    with pytest.raises(ConfigError, match=r"array of tables \(\[\[camera\]\]\)"):
        config.load(path, env={})


def test_sessions_budget_and_linger() -> None:
    assert config.from_mapping({}).sessions == config.SessionsConfig(2, 10.0, {})
    cfg = config.from_mapping(
        {
            "sessions": {
                "max_sessions": 3,
                "linger": 0,
                "camera": [{"match": "192.168.1.64", "max_sessions": 4}],
            }
        }
    )
    assert cfg.sessions == config.SessionsConfig(3, 0.0, {"192.168.1.64": 4})
    env = {"CAMERA_AGENT_MAX_SESSIONS": "5", "CAMERA_AGENT_CONFIG": "/nonexistent"}
    with pytest.raises(ConfigError):  # the named file must exist
        config.load(env=env)
    assert config.load(env={"CAMERA_AGENT_MAX_SESSIONS": "5"}).sessions.max_sessions == 5
    for bad in (
        {"max_sessions": 0},
        {"max_sessions": 65},
        {"max_sessions": True},
        {"max_sessions": "2"},
        {"linger": -1},
        {"linger": 4000},
        {"camera": [{"max_sessions": 2}]},
        {"camera": [{"match": "x", "max_sessions": 0}]},
        {"camera": [{"match": "x", "max_sessions": 2, "other": 1}]},
        {"camera": {"match": "x"}},
        {"unknown": 1},
    ):
        with pytest.raises(ConfigError):
            config.from_mapping({"sessions": bad})
    with pytest.raises(ConfigError):
        config.load(env={"CAMERA_AGENT_MAX_SESSIONS": "lots"})


def test_cors_origins() -> None:
    cfg = config.from_mapping(
        {"api": {"cors_origins": ["https://HA.example.net:8123", "http://nvr.local/"]}}
    )
    assert cfg.cors_origins == ("https://ha.example.net:8123", "http://nvr.local")
    env = {"CAMERA_AGENT_CORS_ORIGINS": "https://a.example, http://b.example:8080"}
    assert config.load(env=env).cors_origins == ("https://a.example", "http://b.example:8080")
    for bad in ("*", "ha.example.net", "https://ha.example.net/path", "ftp://x",
                "https://user@ha.example.net", "https://ha.example.net/?q=1"):  # fmt: skip
        with pytest.raises(ConfigError):
            config.from_mapping({"api": {"cors_origins": [bad]}})
