//! One `[[chains.NAME.upstreams]]` entry: target, URLs, weight, headers, TLS CA file, mock
//! settings, interpolation, and that interpolated secrets never reach a message.

use super::*;

#[test]
fn unknown_upstream_key_reports_its_line() {
    let err = upstream_err("mock = {}\nwieght = 2");
    assert!(
        err.starts_with("conf/upstreams.toml: TOML parse error at line 7, column 1"),
        "{err}"
    );
    assert!(err.contains("unknown field `wieght`"), "{err}");
    let err = upstream_err("mock = { block_time = 5 }");
    assert!(
        err.contains("line 6") && err.contains("unknown field `block_time`"),
        "{err}"
    );
}

#[test]
fn exactly_one_of_http_or_mock() {
    assert_eq!(
        upstream_err("weight = 2"),
        "conf/upstreams.toml: chains.ethereum.upstreams[0]: needs exactly one of `http` (a real \
         node) or `mock` (a built-in mock node)"
    );
    assert_eq!(
        upstream_err("http = \"http://n\"\nmock = {}"),
        "conf/upstreams.toml: chains.ethereum.upstreams[0]: has both `http` and `mock`; use \
         exactly one"
    );
}

#[test]
fn ws_headers_and_tls_only_with_http() {
    let err = upstream_err(
        "mock = {}\nws = \"ws://n\"\nheaders = { a = \"b\" }\ntls_ca_file = \"ca.pem\"",
    );
    let expected: Vec<String> = ["ws", "headers", "tls_ca_file"]
        .iter()
        .map(|k| {
            format!("conf/upstreams.toml: chains.ethereum.upstreams[0].{k}: only allowed with `http`, not with `mock`")
        })
        .collect();
    assert_eq!(err, expected.join("\n"));
}

#[test]
fn http_scheme_must_be_http_or_https() {
    assert_eq!(
        upstream_err("http = \"ftp://node:21\""),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].http: unsupported scheme \"ftp\" \
         (expected http or https)"
    );
    // A scheme written in the file is shown even when the rest comes from the environment.
    assert_eq!(
        upstream_err("http = \"ftp://mainnet.infura.io/v3/${INFURA_KEY}\""),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].http: unsupported scheme \"ftp\" \
         (expected http or https)"
    );
}

#[test]
fn http_must_parse_as_a_url() {
    assert_eq!(
        upstream_err("http = \"node:8545\""),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].http: unsupported scheme \"node\" \
         (expected http or https)"
    );
    assert_eq!(
        upstream_err("http = \"127.0.0.1:8545\""),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].http: invalid URL \"127.0.0.1:8545\": \
         relative URL without a base"
    );
    assert_eq!(
        upstream_err("http = \"http://\""),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].http: invalid URL \"http://\": empty host"
    );
}

#[test]
fn http_must_not_have_a_fragment() {
    assert_eq!(
        upstream_err("http = \"https://node/rpc#x\""),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].http: URL \"https://node/rpc#x\" must \
         not have a #fragment"
    );
}

#[test]
fn ws_scheme_must_be_ws_or_wss() {
    assert_eq!(
        upstream_err("http = \"http://n\"\nws = \"http://n\""),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].ws: unsupported scheme \"http\" \
         (expected ws or wss)"
    );
    let ok = upstreams_ok(&one_upstream("http = \"https://n\"\nws = \"wss://n/ws\""));
    assert!(matches!(
        &ok.chains["ethereum"].upstreams[0].target,
        UpstreamTarget::Remote { ws: Some(ws), .. } if ws.scheme() == "wss"
    ));
}

#[test]
fn weight_must_be_at_least_1() {
    assert_eq!(
        upstream_err("mock = {}\nweight = 0"),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].weight: weight must be at least 1, got 0"
    );
    assert!(upstream_err("mock = {}\nweight = 4294967296")
        .contains("weight must be at most 4294967295"));
}

#[test]
fn header_names_must_be_valid() {
    assert_eq!(
        upstream_err("http = \"http://n\"\nheaders = { \"bad header\" = \"v\" }"),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].headers.\"bad header\": invalid \
         header name \"bad header\""
    );
}

#[test]
fn proxy_owned_headers_are_rejected() {
    for name in [
        "host",
        "Content-Length",
        "transfer-encoding",
        "connection",
        "content-type",
    ] {
        assert_eq!(
            upstream_err(&format!(
                "http = \"http://n\"\nheaders = {{ {name:?} = \"v\" }}"
            )),
            format!(
                "conf/upstreams.toml: chains.ethereum.upstreams[0].headers.{name}: header \
                 {name:?} is set by the proxy and cannot be configured"
            )
        );
    }
}

#[test]
fn header_names_are_case_insensitive_and_unique() {
    let err =
        upstream_err("http = \"http://n\"\nheaders = { \"X-Key\" = \"1\", \"x-key\" = \"2\" }");
    assert_eq!(
        err,
        "conf/upstreams.toml: chains.ethereum.upstreams[0].headers.x-key: header \"x-key\" is \
         given twice (header names are case-insensitive)"
    );
    let ok = upstreams_ok(&one_upstream(
        "http = \"http://n\"\nheaders = { \"X-Key\" = \"1\" }",
    ));
    assert_eq!(
        ok.chains["ethereum"].upstreams[0].headers,
        [("x-key".into(), "1".into())]
    );
}

#[test]
fn header_values_must_be_valid() {
    assert_eq!(
        upstream_err("http = \"http://n\"\nheaders = { x-a = \"line\\nbreak\" }"),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].headers.x-a: invalid header value \
         (only visible ASCII, spaces and tabs are allowed)"
    );
}

#[test]
fn tls_ca_file_must_exist() {
    let path = testdata("upstreams.toml");
    let text = one_upstream("http = \"https://n\"\ntls_ca_file = \"missing.pem\"");
    let msg = parse_upstreams(&text, &path, env).unwrap_err().to_string();
    let expected = format!(
        "{}: chains.ethereum.upstreams[0].tls_ca_file: cannot read \"missing.pem\" (resolved to {:?}): ",
        path.display(),
        testdata("missing.pem").display().to_string()
    );
    assert!(msg.starts_with(&expected), "{msg}");
}

#[test]
fn tls_ca_file_must_hold_a_certificate() {
    let path = testdata("upstreams.toml");
    let text = one_upstream("http = \"https://n\"\ntls_ca_file = \"not-a-cert.pem\"");
    let msg = parse_upstreams(&text, &path, env).unwrap_err().to_string();
    assert!(
        msg.ends_with("contains no PEM certificate (no \"-----BEGIN CERTIFICATE-----\" line)"),
        "{msg}"
    );
}

#[test]
fn tls_ca_file_only_with_https() {
    let path = testdata("upstreams.toml");
    let text = one_upstream("http = \"http://n\"\ntls_ca_file = \"ca.pem\"");
    let msg = parse_upstreams(&text, &path, env).unwrap_err().to_string();
    assert!(
        msg.ends_with(
            "chains.ethereum.upstreams[0].tls_ca_file: only allowed with an https `http` URL"
        ),
        "{msg}"
    );
}

#[test]
fn mock_block_time_at_least_10ms() {
    assert_eq!(
        upstream_err("mock = { block_time_ms = 9 }"),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].mock.block_time_ms: must be at least \
         10, got 9"
    );
}

#[test]
fn mock_latency_range() {
    assert_eq!(
        upstream_err("mock = { latency_ms = [10, 2] }"),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].mock.latency_ms: minimum 10 is greater \
         than maximum 2 (expected [min, max])"
    );
    assert_eq!(
        upstream_err("mock = { latency_ms = [0, 60001] }"),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].mock.latency_ms: maximum must be at \
         most 60000, got 60001"
    );
    for (latency, n) in [("[1, 2, 3]", 3), ("[5]", 1), ("[]", 0)] {
        assert_eq!(
            upstream_err(&format!("mock = {{ latency_ms = {latency} }}")),
            format!(
                "conf/upstreams.toml: chains.ethereum.upstreams[0].mock.latency_ms: expected two \
                 numbers [min, max], got {n} values"
            )
        );
    }
}

#[test]
fn mock_failure_rate_within_0_and_1() {
    for rate in ["1.5", "-0.1", "nan"] {
        assert_eq!(
            upstream_err(&format!("mock = {{ failure_rate = {rate} }}")),
            format!(
                "conf/upstreams.toml: chains.ethereum.upstreams[0].mock.failure_rate: must be \
                 between 0 and 1, got {}",
                rate.replace("nan", "NaN")
            )
        );
    }
}

#[test]
fn mock_lag_blocks_at_most_the_genesis_head() {
    assert_eq!(
        upstream_err("mock = { lag_blocks = 1001 }"),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].mock.lag_blocks: must be at most \
         1000, got 1001"
    );
    let config = upstreams_ok(&one_upstream("mock = { lag_blocks = 2 }"));
    let UpstreamTarget::Mock(spec) = &config.chains["ethereum"].upstreams[0].target else {
        panic!("should be a mock");
    };
    assert_eq!(spec.lag_blocks, 2);
}

#[test]
fn missing_env_var_names_variable_and_key() {
    assert_eq!(
        upstream_err("http = \"http://n\"\nheaders = { x-api-key = \"${NOT_SET}\" }"),
        "conf/upstreams.toml: chains.ethereum.upstreams[0].headers.x-api-key: environment \
         variable \"NOT_SET\" is not set"
    );
    assert!(upstream_err("http = \"https://x/${NOT_SET}\"")
        .ends_with("upstreams[0].http: environment variable \"NOT_SET\" is not set"));
}

#[test]
fn bad_placeholders_are_errors() {
    assert!(upstream_err("http = \"https://x/${KEY\"")
        .ends_with("upstreams[0].http: unterminated \"${\" (write \"$${\" for a literal \"${\")"));
    assert!(upstream_err("http = \"http://n\"\nws = \"ws://x/${A-B}\"").ends_with(
        "upstreams[0].ws: invalid environment variable name \"A-B\" (letters, digits and _, not \
         starting with a digit)"
    ));
}

#[test]
fn interpolation_and_dollar_escape() {
    let config = upstreams_ok(&one_upstream(
        "http = \"https://mainnet.infura.io/v3/${INFURA_KEY}\"\n\
         headers = { x-a = \"$${INFURA_KEY}\", x-b = \"p$a$$\" }",
    ));
    let a = &config.chains["ethereum"].upstreams[0];
    let UpstreamTarget::Remote { http, .. } = &a.target else {
        panic!("should be remote");
    };
    assert_eq!(http.path(), format!("/v3/{INFURA_SECRET}"));
    assert_eq!(
        a.headers,
        [
            ("x-a".into(), "${INFURA_KEY}".into()),
            ("x-b".into(), "p$a$$".into())
        ]
    );
}

#[test]
fn interpolated_secrets_never_appear_in_messages() {
    let text = format!(
        "{}{}",
        one_upstream(
            "http = \"https://mainnet.infura.io/v3/${INFURA_KEY}#x\"\n\
             ws = \"${SECRET_SCHEME}://n/${INFURA_KEY}\"\n\
             headers = { x-a = \"${BAD_HEADER}\", x-b = \"${ALCHEMY_KEY}\" }\n\
             tls_ca_file = \"${CA_DIR}/ca.pem\""
        ),
        "[[chains.ethereum.upstreams]]\nname = \"b\"\nhttp = \"${BAD_URL}\"\n\
         [[chains.ethereum.upstreams]]\nname = \"c\"\nhttp = \"${SECRET_SCHEME}://${INFURA_KEY}\"\n"
    );
    let err = upstreams_err(&text);
    assert_eq!(err.lines().count(), 6, "{err}");
    for secret in [INFURA_SECRET, ALCHEMY_SECRET, "ftpinfuras3cretvalue"] {
        assert!(!err.contains(secret), "{secret} leaked: {err}");
    }
    assert!(
        err.contains("\"https://mainnet.infura.io/v3/${INFURA_KEY}#x\""),
        "{err}"
    );
    assert!(
        err.contains("unsupported scheme in \"${SECRET_SCHEME}://n/${INFURA_KEY}\""),
        "{err}"
    );
    assert!(err.contains("invalid URL \"${BAD_URL}\""), "{err}");
}
