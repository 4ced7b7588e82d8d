"""The browser harness itself: a local page renders, and a request to the internet is refused."""


def test_a_local_page_renders_and_remote_requests_are_refused(browser_page) -> None:
    page = browser_page.open(
        "<html><body><p id='x'>hello</p><img src='https://example.com/pixel.png'></body></html>",
        wait_ms=200,
    )
    assert page.locator("#x").inner_text() == "hello"
    assert any(url.startswith("https://example.com/") for url in browser_page.blocked)
