"""``reactive-services token`` and ``reactive-services users add|list``."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from reactive_services.auth import JwtConfig, verify_token
from reactive_services.cli import main
from reactive_services.errors import AuthenticationError
from reactive_services.examples.shop.auth import AuthController, UserStore

SECRET = "cli-test-secret-0123456789abcdef-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ALGORITHM",
        "SECRET",
        "PRIVATE_KEY",
        "PRIVATE_KEY_FILE",
        "PUBLIC_KEY",
        "PUBLIC_KEY_FILE",
        "ISSUER",
        "AUDIENCE",
        "TTL_S",
        "LEEWAY_S",
    ):
        monkeypatch.delenv("RS_JWT_" + name, raising=False)
    monkeypatch.delenv("RS_AUTH_DB", raising=False)


def test_token_prints_a_token_that_verify_token_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RS_JWT_SECRET", SECRET)
    monkeypatch.setenv("RS_JWT_AUDIENCE", "shop")
    assert main(["token", "--sub", "alice", "--scope", "orders:write", "--scope", "orders:read", "--ttl", "120"]) == 0
    out = capsys.readouterr()
    [token] = out.out.splitlines()
    claims = verify_token(JwtConfig.from_env({"RS_JWT_SECRET": SECRET, "RS_JWT_AUDIENCE": "shop"}), token)
    assert claims.sub == "alice" and claims.scopes == {"orders:read", "orders:write"}
    assert claims.claims["exp"] - claims.claims["iat"] == 120
    assert out.err == ""


def test_token_with_an_rs256_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "jwt.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    monkeypatch.setenv("RS_JWT_ALGORITHM", "RS256")
    monkeypatch.setenv("RS_JWT_PRIVATE_KEY_FILE", str(tmp_path / "jwt.pem"))
    assert main(["token", "--sub", "svc"]) == 0
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    claims = verify_token(JwtConfig(algorithm="RS256", public_key=public), capsys.readouterr().out.strip())
    assert claims.sub == "svc" and claims.scopes == frozenset()


def test_token_with_secret_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--sub", "dev", "--scope", "admin", "--secret", SECRET]) == 0
    token = capsys.readouterr().out.strip()
    assert verify_token(JwtConfig(secret=SECRET), token).scopes == {"admin"}


@pytest.mark.parametrize(
    ("args", "env", "key"),
    [
        ([], {}, "RS_JWT_SECRET"),
        ([], {"RS_JWT_SECRET": "short"}, "RS_JWT_SECRET"),
        ([], {"RS_JWT_ALGORITHM": "RS256"}, "RS_JWT_PUBLIC_KEY"),
        ([], {"RS_JWT_ALGORITHM": "RS256", "RS_JWT_PRIVATE_KEY_FILE": "/nonexistent.pem"}, "RS_JWT_PRIVATE_KEY_FILE"),
        ([], {"RS_JWT_ALGORITHM": "RS256", "RS_JWT_PUBLIC_KEY": "PUBLIC"}, "RS_JWT_PRIVATE_KEY"),
        (["--secret", "short"], {}, "--secret"),
        (["--ttl", "0"], {"RS_JWT_SECRET": SECRET}, "--ttl"),
        (["--scope", "two words"], {"RS_JWT_SECRET": SECRET}, "scope"),
    ],
)
def test_token_without_a_usable_configuration_exits_2_with_one_line(
    args: list[str],
    env: dict[str, str],
    key: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        if value == "PUBLIC":  # a verify-only configuration
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa

            value = (
                rsa.generate_private_key(public_exponent=65537, key_size=2048)
                .public_key()
                .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                .decode()
            )
        monkeypatch.setenv(name, value)
    assert main(["token", "--sub", "alice", *args]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    [line] = out.err.splitlines()
    assert line.startswith(f"error: bad configuration: {key}: ")


def test_users_add_creates_a_user_that_can_log_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "auth" / "users.db"
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret password\n"))
    assert (
        main(
            [
                "users",
                "add",
                "alice",
                "--scope",
                "orders:write",
                "--scope",
                "orders:read",
                "--db",
                str(db),
                "--password-stdin",
            ]
        )
        == 0
    )
    assert "alice" in capsys.readouterr().out

    monkeypatch.setenv("RS_AUTH_DB", str(db))  # the default path
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return "bobs own password"

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    assert main(["users", "add", "bob", "--scope", "notifications:read"]) == 0
    assert prompts == ["password for bob: ", "repeat it: "]
    capsys.readouterr()
    assert main(["users", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["alice\torders:read orders:write", "bob\tnotifications:read"]

    async def login() -> None:
        config = JwtConfig.development()
        async with UserStore(db) as store:
            auth = AuthController(store, config, base_delay_s=0)
            reply = await auth.login({"username": "alice", "password": "s3cret password"})
            assert verify_token(config, reply["access_token"]).scopes == {"orders:read", "orders:write"}
            assert (await auth.login({"username": "bob", "password": "bobs own password"}))[
                "scope"
            ] == "notifications:read"
            with pytest.raises(AuthenticationError):
                await auth.login({"username": "alice", "password": "bobs own password"})

    import asyncio

    asyncio.run(login())


@pytest.mark.parametrize(
    ("args", "stdin", "start"),
    [
        (["users", "add", "alice", "--scope", "orders:write"], "another password\n", "error: username: 'alice' exists"),
        (["users", "add", "carol"], "short\n", "error: password: too short"),
        (
            ["users", "add", "carol", "--scope", "orders:delete"],
            "long enough\n",
            "error: bad configuration: scope: unknown scope 'orders:delete'",
        ),
        (["users", "add", "two words"], "long enough\n", "error: username:"),
    ],
)
def test_users_add_refusals_exit_2_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    stdin: str,
    start: str,
) -> None:
    db = tmp_path / "auth.db"
    monkeypatch.setattr(sys, "stdin", io.StringIO("first password\n"))
    assert main(["users", "add", "alice", "--db", str(db), "--password-stdin"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main([*args, "--db", str(db), "--password-stdin"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(start)


def test_users_add_refuses_two_different_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter(["one password", "another one"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["users", "add", "alice", "--db", str(tmp_path / "auth.db")]) == 2
    assert capsys.readouterr().err.startswith("error: bad configuration: password: the two passwords differ")
    assert not (tmp_path / "auth.db").exists()


def test_the_installed_command_runs_token() -> None:
    """The console script path: ``python -m reactive_services.cli token ...`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-m", "reactive_services.cli", "token", "--sub", "ci", "--secret", SECRET],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert verify_token(JwtConfig(secret=SECRET), done.stdout.strip()).sub == "ci"
