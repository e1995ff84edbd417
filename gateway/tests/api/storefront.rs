//! The storefront: its files and headers over plain HTTP (in-process gateway), then a
//! shopper in a real headless Chromium against the real processes (orders and the
//! gateway binary; payments where the order must settle). Screenshots of each step go to
//! `target/storefront-screenshots/`; the placed order's page is also the README's
//! docs/storefront.png, when `UPDATE_DOCS_SCREENSHOT=1`.

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    browser::Browser,
    helpers::{Stack, StackConfig, gateway_with_stub},
};

/// A Jaeger address no page could guess: the trace links must come from the gateway.
const JAEGER: &str = "http://jaeger.example.test:16686";

// ---- over HTTP

#[sqlx::test(migrations = "../migrations")]
async fn the_storefront_page_has_security_headers_an_etag_and_no_inline_script(pool: PgPool) {
    let (gateway, _stub, _stub_tasks) = gateway_with_stub(&pool, |_| {}).await;

    let response = gateway.get("/").await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-cache");
    let etag = headers["etag"].clone();

    // No inline script: every <script> loads a file from this origin.
    let page = response.text().await.unwrap();
    for tag in page.split("<script").skip(1) {
        let tag = &tag[..tag.find('>').unwrap()];
        assert!(
            tag.contains("src=\"/assets/"),
            "inline script: <script{tag}>"
        );
    }

    let again = gateway
        .client
        .get(gateway.url("/"))
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304, "unchanged: revalidated without a body");
    assert_eq!(again.headers()["etag"], etag);
    assert!(again.headers().contains_key("content-security-policy"));

    let missing = gateway.get("/assets/nothing-here.js").await;
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().contains_key("content-security-policy"));
}

#[sqlx::test(migrations = "../migrations")]
async fn the_storefront_modules_are_served_compressed_to_clients_that_accept_it(pool: PgPool) {
    let (gateway, _stub, _stub_tasks) = gateway_with_stub(&pool, |_| {}).await;
    for file in ["/assets/app.js", "/assets/api.js", "/assets/style.css"] {
        let plain = gateway.get(file).await;
        assert_eq!(plain.status(), 200, "{file}");
        assert!(!plain.headers().contains_key("content-encoding"));
        let size = plain.bytes().await.unwrap().len();

        // Raw HTTP/1.0, not reqwest: with its `gzip` feature (on when the whole
        // workspace is built: goose asks for it) reqwest would decode the body and drop
        // `Content-Encoding` before the test could see them.
        let (head, body) = raw_get(gateway.addr, file, "gzip").await;
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{file}: {head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\ncontent-encoding: gzip\r\n"),
            "{file}: {head}"
        );
        let compressed = body.len();
        assert!(
            compressed < size,
            "{file}: {compressed} bytes gzipped, {size} plain"
        );
    }
    let script = gateway.get("/assets/app.js").await;
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript"),
        "a module is served as JavaScript (nosniff would refuse it otherwise)"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_storefront_learns_the_jaeger_address_from_the_gateway(pool: PgPool) {
    let (gateway, _stub, _stub_tasks) = gateway_with_stub(&pool, |config| {
        config.jaeger_ui_url = format!("{JAEGER}/");
    })
    .await;
    let config = gateway.get_json("/v1/config").await;
    assert_eq!(config["jaeger_ui_url"], JAEGER);
}

// ---- in a browser

/// Signs in as `user1` through the page and waits until the header shows the user.
async fn sign_in(browser: &Browser) {
    browser.click("#signin-link").await;
    let password = browser.wait_for("#password").await;
    password.send_keys("password1").await.unwrap();
    browser.click("#signin").await;
    browser
        .wait_until(
            "the header shows the signed-in user",
            "document.querySelector('.who')?.textContent === 'user1@shop.test'",
        )
        .await;
}

/// Adds the catalog's first `n` products to the cart; returns their ids.
async fn add_products(browser: &Browser, n: usize) -> Vec<String> {
    browser.wait_for(".products li.card").await;
    let mut ids = Vec::new();
    for i in 1..=n {
        let card = format!(".products li.card:nth-child({i})");
        ids.push(browser.attr(&card, "data-product-id").await);
        browser.click(&format!("{card} button.add")).await;
    }
    ids
}

/// Types `n` into the cart's (first) quantity field as a user would, and leaves it.
async fn type_quantity(browser: &Browser, n: u32) {
    let quantity = browser.wait_for("input.quantity").await;
    quantity.clear().await.unwrap();
    quantity.send_keys(&format!("{n}\t")).await.unwrap();
    browser
        .wait_until(
            &format!("the cart holds quantity {n}"),
            &format!("JSON.parse(localStorage.getItem('shop.cart'))[0].quantity === {n}"),
        )
        .await;
}

/// The order page's status, once it shows one: `placed`, `paid` or `cancelled`.
async fn order_status(browser: &Browser) -> String {
    browser
        .attr("#order-status [data-status]", "data-status")
        .await
}

/// The id of the order the page shows (after a checkout).
async fn shown_order_id(browser: &Browser) -> Uuid {
    let id = browser.attr("dl.order", "data-order-id").await;
    id.parse().unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_shopper_signs_in_buys_two_products_and_follows_the_checkout_to_its_trace(pool: PgPool) {
    let stack = Stack::start(
        &pool,
        StackConfig {
            gateway_env: &[("JAEGER_UI_URL", JAEGER)],
            ..StackConfig::default()
        },
    );
    let mut browser = Browser::start("checkout", 1280, 900).await;
    browser.open(&format!("{}/", stack.gateway)).await;

    // The page as the browser received it: with its Content-Security-Policy.
    let page = browser.exchanges("GET", "/").await;
    let page = page.first().expect("the page's request");
    assert_eq!(page.status, Some(200));
    let csp = page
        .header("content-security-policy")
        .expect("a CSP on the page");
    assert!(csp.contains("script-src 'self'"), "{csp}");

    let products = add_products(&browser, 2).await;
    assert_eq!(browser.text("#cart-count").await, "2");
    browser.screenshot("catalog").await;

    sign_in(&browser).await;
    browser.click("#cart-link").await;
    browser.wait_for("#checkout:not([disabled])").await;
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('table.cart tbody tr').length;")
            .await,
        2
    );
    browser.screenshot("cart").await;
    browser.click("#checkout").await;

    assert_eq!(order_status(&browser).await, "placed");
    let id = shown_order_id(&browser).await;
    let shot = browser.screenshot("order-placed").await;
    // The README's picture, an order just placed with its trace one click away, is
    // refreshed on request only (each run has another order id and time):
    // `UPDATE_DOCS_SCREENSHOT=1 cargo nextest run -p shop-gateway follows_the_checkout`.
    if std::env::var_os("UPDATE_DOCS_SCREENSHOT").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/storefront.png");
        browser.keep(&shot, &docs);
    }

    // Postgres has the order, with both products.
    let items: Vec<(Uuid, i32)> = sqlx::query_as(
        "select product_id, quantity from order_items where order_id = $1 order by product_id",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut expected: Vec<Uuid> = products.iter().map(|p| p.parse().unwrap()).collect();
    expected.sort();
    assert_eq!(
        items.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        expected,
        "the order holds the two products added"
    );

    // The checkout's trace link carries the x-trace-id of the POST the browser got.
    let posts = browser.exchanges("POST", "/v1/orders").await;
    assert_eq!(posts.len(), 1, "one POST /v1/orders: {posts:?}");
    assert_eq!(posts[0].status, Some(201));
    let trace_id = posts[0]
        .header("x-trace-id")
        .expect("x-trace-id on the answer");
    let link = browser.attr("#flash a.trace", "href").await;
    assert_eq!(link, format!("{JAEGER}/trace/{trace_id}"));

    // Every call of the order page is listed with its own trace link.
    let href = browser
        .attr(
            "#call-list li[data-method='GET'][data-status='200'] a.trace",
            "href",
        )
        .await;
    assert!(href.starts_with(&format!("{JAEGER}/trace/")), "{href}");

    // My orders lists it, placed.
    browser.click("nav a[href='#/orders']").await;
    let row = format!("#orders li[data-order-id='{id}'] [data-status]");
    assert_eq!(browser.attr(&row, "data-status").await, "placed");
    browser.screenshot("my-orders").await;

    // The CSP is in force: a script injected inline does not run (Chrome logs the
    // refusal, the one console error this test expects).
    let ran = browser
        .eval(
            "const s = document.createElement('script'); s.textContent = 'window.injected = 1'; \
             document.head.append(s); return window.injected === 1;",
        )
        .await;
    assert_eq!(ran, false, "an inline script ran despite the CSP");
    browser.finish(&["Content Security Policy"]).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_double_clicked_checkout_on_a_phone_places_exactly_one_order(pool: PgPool) {
    let stack = Stack::start(&pool, StackConfig::default());
    let mut browser = Browser::start("phone", 375, 812).await;
    browser.open(&format!("{}/", stack.gateway)).await;
    add_products(&browser, 1).await;
    sign_in(&browser).await;

    // Usable at 375 px: nothing wider than the screen.
    assert_eq!(browser.eval("return window.innerWidth;").await, 375);
    let fits = browser
        .eval("return document.documentElement.scrollWidth <= window.innerWidth;")
        .await;
    assert_eq!(fits, true, "the catalog scrolls sideways at 375 px");
    browser.screenshot("catalog-375px").await;

    browser.click("#cart-link").await;
    let button = browser.wait_for("#checkout:not([disabled])").await;
    browser.screenshot("cart-375px").await;
    // Two clicks in one go, the second before the first's answer can arrive.
    browser
        .client
        .execute(
            "const b = arguments[0]; b.click(); \
             b.dispatchEvent(new MouseEvent('click', { bubbles: true }));",
            vec![serde_json::to_value(&button).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(order_status(&browser).await, "placed");
    browser.screenshot("order-375px").await;

    let orders: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orders, 1, "a double click placed one order");
    let posts = browser.exchanges("POST", "/v1/orders").await;
    assert_eq!(posts.len(), 1, "one POST: {posts:?}");
    let fits = browser
        .eval("return document.documentElement.scrollWidth <= window.innerWidth;")
        .await;
    assert_eq!(fits, true, "the order page scrolls sideways at 375 px");
    browser.finish(&[]).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_checkout_whose_answer_is_lost_is_resent_with_the_same_key_and_places_one_order(
    pool: PgPool,
) {
    let stack = Stack::start(&pool, StackConfig::default());
    let mut browser = Browser::start("lost-answer", 1280, 900).await;
    browser.open(&format!("{}/", stack.gateway)).await;
    add_products(&browser, 1).await;
    sign_in(&browser).await;
    browser.click("#cart-link").await;
    browser.wait_for("#checkout:not([disabled])").await;
    // The network fails after the request reached the shop: the first POST is placed,
    // and its answer never reaches the page.
    browser
        .eval(
            "const send = window.fetch; let lost = false; \
             window.fetch = async (url, init) => { \
               const answer = await send(url, init); \
               if (!lost && init?.method === 'POST' && url === '/v1/orders') { \
                 lost = true; throw new TypeError('Failed to fetch'); } \
               return answer; };",
        )
        .await;
    browser.click("#checkout").await;
    assert_eq!(order_status(&browser).await, "placed");
    let said = browser.text("#flash .message").await;
    assert!(
        said.contains("already placed"),
        "the replay is told: {said}"
    );

    let posts = browser.exchanges("POST", "/v1/orders").await;
    assert_eq!(posts.len(), 2, "the attempt and its retry: {posts:?}");
    let keys: Vec<_> = posts
        .iter()
        .map(|p| p.request_header("idempotency-key").expect("a key"))
        .collect();
    assert_eq!(keys[0], keys[1], "the retry resends the attempt's key");
    assert_eq!(posts[1].header("idempotent-replayed"), Some("true"));
    let orders: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orders, 1, "one order for the attempt");
    browser.screenshot("replayed").await;
    browser.finish(&[]).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_out_of_stock_and_a_rate_limited_checkout_are_explained_in_sentences(pool: PgPool) {
    let stack = Stack::start(
        &pool,
        StackConfig {
            // One placement per hour: the second checkout is refused with 429.
            gateway_env: &[("RATE_LIMIT_ORDERS", "1/h")],
            ..StackConfig::default()
        },
    );
    let mut browser = Browser::start("refusals", 1280, 900).await;
    browser.open(&format!("{}/", stack.gateway)).await;
    let product = add_products(&browser, 1).await.remove(0);
    let product: Uuid = product.parse().unwrap();
    let name: String = sqlx::query_scalar("select name from products where id = $1")
        .bind(product)
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("update products set stock = 1 where id = $1")
        .bind(product)
        .execute(&pool)
        .await
        .unwrap();
    sign_in(&browser).await;

    // Two in the cart, one in stock: 409 insufficient-stock, told with the product's name.
    browser.click("#cart-link").await;
    type_quantity(&browser, 2).await;
    browser.click("#checkout:not([disabled])").await;
    let said = browser.text("#checkout-status .message.error").await;
    assert!(
        said.contains("Not enough stock") && said.contains(&name),
        "409 as a sentence: {said}"
    );
    browser.screenshot("insufficient-stock").await;

    // One is fine, but the one placement of the hour is spent: 429 with a countdown.
    type_quantity(&browser, 1).await;
    browser.click("#checkout:not([disabled])").await;
    let said = browser.text("#checkout-status .countdown").await;
    assert!(
        said.starts_with("Too many requests.") && said.contains("try again in"),
        "429 as a sentence with a countdown: {said}"
    );
    assert!(
        !browser
            .wait_for("#checkout")
            .await
            .is_enabled()
            .await
            .unwrap(),
        "no new attempt before Retry-After"
    );
    browser.screenshot("rate-limited").await;

    let orders: i64 = sqlx::query_scalar("select count(*) from orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orders, 0);
    // Chrome logs each refused fetch as an error; those two are expected, nothing else.
    browser.finish(&["status of 409", "status of 429"]).await;
}

// ---- with payments: the order settles

/// With payments running (`payments_env` added to its environment), a shopper checks out
/// the catalog's first `products` products; returns once the order page shows `status`
/// (it polls by itself), with the stack and the browser still there.
async fn check_out_until(
    pool: &PgPool,
    name: &str,
    payments_env: &[(&str, &str)],
    products: usize,
    status: &str,
) -> (Stack, Browser) {
    let stack = Stack::start(
        pool,
        StackConfig {
            payments: Some(payments_env),
            ..StackConfig::default()
        },
    );
    let browser = Browser::start(name, 1280, 900).await;
    browser.open(&format!("{}/", stack.gateway)).await;
    add_products(&browser, products).await;
    sign_in(&browser).await;
    browser.click("#cart-link").await;
    browser.click("#checkout:not([disabled])").await;
    browser.wait_for("#order-status [data-status]").await;
    browser
        .wait_until(
            &format!("the order page shows {status}"),
            &format!(
                "document.querySelector('#order-status [data-status]')?.dataset.status === '{status}'"
            ),
        )
        .await;
    (stack, browser)
}

#[sqlx::test(migrations = "../migrations")]
async fn a_checked_out_order_reaches_paid_while_the_page_watches(pool: PgPool) {
    let (_stack, mut browser) = check_out_until(&pool, "paid", &[], 2, "paid").await;
    browser.screenshot("paid").await;
    browser.finish(&[]).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_declined_order_shows_cancelled_and_why(pool: PgPool) {
    // Every order costs more than 1 cent: every payment is declined.
    let decline_all = [("PAYMENTS_DECLINE_ABOVE_CENTS", "1")];
    let (_stack, mut browser) =
        check_out_until(&pool, "declined", &decline_all, 1, "cancelled").await;
    let reason = browser.text("#order-status .reason").await;
    assert!(reason.contains("declined"), "the reason is shown: {reason}");
    browser.screenshot("declined").await;
    browser.finish(&[]).await;
}

/// `GET path` over a plain HTTP/1.0 connection with `Accept-Encoding: encoding`: the
/// response head as text and the body's bytes, exactly as sent.
async fn raw_get(addr: std::net::SocketAddr, path: &str, encoding: &str) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: test\r\nAccept-Encoding: {encoding}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&response[..split + 2]).into_owned();
    (head, response[split + 4..].to_vec())
}
