"""The report page: written offline and fast, and checked in a real browser (Debian's Chromium,
headless, driven by Selenium): no console errors, no network requests, clicking a module opens its
layers; a screenshot is taken."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT, SPECS, run_archc

import archcompiler
from archcompiler.backends.report import report_html


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "googlenet-report.html"
    result = run_archc("report", str(SPECS / "googlenet.yaml"), "-o", str(path))
    assert result.returncode == 0, result.stderr
    return path


def test_the_page_holds_everything_and_fetches_nothing(page):
    text = page.read_text()
    assert page.stat().st_size < 3 * 2**20
    for needed in ("Architecture", "The table, regenerated", "MACs and parameters per row", "per stage",
                   "Op kinds", "Memory per row", "The resolved spec", "layers-n_inception_4b"):
        assert needed in text, needed
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    assert "url(http" not in text and "src=\"http" not in text and "href=\"http" not in text
    # the paper's inconsistent cells are marked and explained (conv1 2.7K / 34M, 4c, 5a)
    assert text.count("class='inconsistent'") == 5 and "the paper says 2.7K" in text


@pytest.mark.slow
def test_the_page_in_a_real_browser(page, tmp_path):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, "Debian's chromium and chromium-driver are installed by setup.sh"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-quic", f"--user-data-dir={tmp_path / 'profile'}",
                 "--window-size=1400,1800"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(page.as_uri())
        assert "googlenet" in driver.title
        module = driver.find_element(By.CSS_SELECTOR, ".diagram g.module")
        panel_id = "layers-" + module.find_element(By.TAG_NAME, "title").get_attribute("textContent").strip()
        panel = driver.find_element(By.ID, panel_id)
        assert not panel.is_displayed()
        module.find_element(By.TAG_NAME, "text").click()          # the module's label, as a person clicks
        assert panel.is_displayed() and "layers" in panel.text
        driver.save_screenshot(str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        requests = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
        urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
        network = [u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:", "ftp:"))]
        assert not network, network            # (chrome:// pages are the browser's own, not the network)
        assert any(u.startswith("file:") for u in urls)
    finally:
        driver.quit()


def test_report_with_a_machine_profile_shows_latency_and_the_roofline(tmp_path):
    from archcompiler.passes.machine import shipped_profile_path

    machine = shipped_profile_path()          # a fixed profile (calibrating is tested in test_latency.py)
    from archcompiler.backends.dot import collapsed_svg

    spec = archcompiler.load_spec(SPECS / "googlenet-small.yaml")
    text = report_html(spec, collapsed_svg(spec), machine=machine, batch=8)
    assert "Roofline" in text and "Latency per row" in text and "predicted latency (batch 8)" in text
    assert "working set / cache" in text and "cold-cache speed" in text
    assert (ROOT / "docs" / "report.png").is_file()          # the README's screenshot


def test_the_table_shows_only_the_columns_it_has_and_no_scroll_box_hides_its_rows(page):
    """Without a profile there are no measured times, without a machine profile no predicted ones: no
    empty columns; the table is not clipped by a scroll box (a screenshot shows every row)."""
    text = page.read_text()
    assert "measured ms" not in text
    table = text[text.index("The table, regenerated"):text.index("What the paper's numbers say")]
    assert "max-height" not in table and "inception_5b" in table


def test_the_per_stage_chart_gives_macs_and_parameters_an_axis_each(page):
    text = page.read_text()
    chart = text[text.index("MACs and parameters per stage"):text.index("Op kinds")]
    assert "multiply-adds (M)" in chart and "parameters (K)" in chart


def test_a_rows_bound_is_where_it_sits_against_the_ridge(tmp_path):
    """The roofline colours a row by the side of the ridge it is drawn on, as flops --latency says it."""
    import json

    from archcompiler.passes import annotated_graph
    from archcompiler.passes.latency import peak_flops, predict_rows
    from archcompiler.passes.machine import shipped_profile_path

    profile = json.loads(shipped_profile_path().read_text())
    ridge = peak_flops(profile) / profile["bandwidth_bytes_per_s"]
    rows = predict_rows(annotated_graph(archcompiler.load_spec(SPECS / "googlenet.yaml")), profile)
    assert {r["bound"] for r in rows.values()} == {"compute", "memory"}
    for name, r in rows.items():
        assert r["bound"] == ("compute" if r["intensity"] >= ridge else "memory"), name


def test_roofline_names_never_overlap_even_in_a_cluster():
    """Nine inception modules sit in one cluster of the roofline: the names written do not overlap
    (their drawn boxes are disjoint), and the costliest row is always named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from archcompiler.backends.report import _name_points

    fig, ax = plt.subplots(figsize=(6, 4))
    cluster = [(10.0 - k, f"inception_{k}", 20 + 0.2 * k, 30 + 0.3 * k) for k in range(9)]
    spread = [(0.5, "pool1", 0.4, 0.8), (0.4, "norm1", 0.6, 0.1), (3.0, "conv1", 25.0, 200.0)]
    named = cluster + spread
    ax.scatter([x for _, _, x, _ in named], [y for *_, y in named])
    ax.set_xscale("log")
    ax.set_yscale("log")
    _name_points(ax, named)
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.texts]
    assert "inception_0" in [t.get_text() for t in ax.texts] and 3 <= len(boxes) < len(named)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)
