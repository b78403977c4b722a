"""What browser tests do on a page: sign in, take a screenshot."""

from pathlib import Path

from tests.factories import TEST_PASSWORD

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "browser"
TIMEOUT_MS = 30_000


def screenshot(page, name: str) -> None:
    # The films load after the page: wait for them, or the picture shows an empty frame.
    page.wait_for_function("() => Array.from(document.images).every(image => image.complete)")
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page, base_url: str, user, device=None) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", TEST_PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_load_state()
    if "/accounts/two-factor/" in page.url:
        from django_otp.oath import totp

        code = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=device.drift)
        page.fill("input[name=token]", f"{code:0{device.digits}d}")
        page.click("main button[type=submit]")
        page.wait_for_load_state()
    assert "/accounts/login/" not in page.url, page.content()[:2000]
