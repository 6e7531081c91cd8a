"""`caslab balancer config` prints what a driver renders, or says what it refuses and exits 2."""

from __future__ import annotations

from lab.cli import main


def test_prints_the_rendered_config_of_a_preset(capsys):
    assert main(["balancer", "config", "--driver", "haproxy", "--preset", "recommended"]) == 0
    out = capsys.readouterr().out
    assert "backend owa_ecp" in out and "cookie lb_owa_ecp insert" in out
    assert "stick on req.hdr(Authorization)" in out
    assert "bind 127.0.1.1:8080" in out  # the lab's default VIP, loopback only


def test_envoy_config_is_json(capsys):
    import json

    assert main(["balancer", "config", "--driver", "envoy", "--preset", "source-ip-all"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in config["static_resources"]["clusters"]} >= {"owa_ecp", "mapi", "addressbook"}


def test_a_refused_method_names_service_method_and_alternatives(capsys):
    assert main(["balancer", "config", "--driver", "envoy", "--preset", "article"]) == 2
    err = capsys.readouterr().err
    assert "'app-cookie' persistence for owa" in err
    assert "for owa it can do: none, leastconn, source-ip, lb-cookie, cookie-hash, header" in err


def test_unknown_preset_lists_the_presets(capsys):
    assert main(["balancer", "config", "--driver", "haproxy", "--preset", "sticky"]) == 2
    assert "allowed: article, recommended, source-ip-all, lb-cookie-all, none-all" in capsys.readouterr().err


def test_scenario_section_with_command_line_driver(capsys):
    assert (
        main(
            [
                "balancer",
                "config",
                "--driver",
                "haproxy",
                "--preset",
                "recommended",
                "--scenario",
                "quickstart",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "backend owa_ecp" in out
