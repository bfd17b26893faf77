//! A whole order through the router: account, order, http-01 validated against a real
//! responder, finalize (a CSR with other names refused), download, revocation.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_goes_from_account_to_certificate_to_revocation() {
    let answers = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let port = http01_responder(answers.clone()).await;
    let (app, st, _dir) = server(port).await;

    let dir = send(
        &app,
        Request::get("/acme/directory")
            .header("host", HOST)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(dir.json()["newOrder"], format!("{BASE}/acme/new-order"));

    let mut client = Client::new(&app).await;
    let created = client.register().await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let kid = client.kid.clone().unwrap();
    assert!(kid.starts_with(&format!("{BASE}/acme/acct/")));
    client.kid = None;
    let again = client
        .post(
            "/acme/new-account",
            Some(json!({"onlyReturnExisting": true})),
        )
        .await;
    assert_eq!(
        (again.status, again.header("location")),
        (StatusCode::OK, kid.clone())
    );
    client.kid = Some(kid);

    let (order_url, authz_url, http01) = client.order_with_http01("web.internal").await;
    let token = http01["token"].as_str().unwrap().to_string();
    let thumbprint = client
        .kid
        .as_ref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    answers
        .lock()
        .unwrap()
        .insert(token.clone(), format!("{token}.{thumbprint}"));
    let chall = client
        .post(http01["url"].as_str().unwrap(), Some(json!({})))
        .await;
    assert_eq!(chall.status, StatusCode::OK);
    assert!(chall.header("link").contains("rel=\"up\""));

    assert_eq!(client.settled_authz(&authz_url).await["status"], "valid");
    assert_eq!(
        client.post(&order_url, None).await.json()["status"],
        "ready"
    );

    let wrong = csr(&["web.internal", "extra.internal"]);
    let refused = client
        .post(
            &format!("{order_url}/finalize"),
            Some(json!({"csr": wrong})),
        )
        .await;
    assert_eq!(refused.problem_type(), "urn:ietf:params:acme:error:badCSR");
    let done = client
        .post(
            &format!("{order_url}/finalize"),
            Some(json!({"csr": csr(&["web.internal"])})),
        )
        .await;
    assert_eq!(
        done.json()["status"],
        "valid",
        "{}",
        String::from_utf8_lossy(&done.body)
    );
    let cert_url = done.json()["certificate"].as_str().unwrap().to_string();
    let cert = client.post(&cert_url, None).await;
    assert_eq!(
        cert.header("content-type"),
        "application/pem-certificate-chain"
    );
    let ders = keyward_core::check::pem_to_ders(&cert.body).unwrap();
    let summary = keyward_core::check::summarize(&ders[0]).unwrap();
    assert_eq!(summary.sans, vec!["DNS:web.internal".to_string()]);
    assert!(
        st.state
            .inventory()
            .unwrap()
            .iter()
            .any(|r| r.serial_hex == summary.serial_hex)
    );

    let revoke = json!({"certificate": B64.encode(&ders[0])});
    // Another account may neither read the order, download the certificate nor revoke it.
    let mut stranger = Client::new(&app).await;
    stranger.register().await;
    let unauthorized = "urn:ietf:params:acme:error:unauthorized";
    assert_eq!(
        stranger.post(&order_url, None).await.problem_type(),
        unauthorized
    );
    assert_eq!(
        stranger.post(&cert_url, None).await.problem_type(),
        unauthorized
    );
    let theirs = stranger
        .post("/acme/revoke-cert", Some(revoke.clone()))
        .await;
    assert_eq!(theirs.problem_type(), unauthorized);
    assert!(
        st.state
            .revocations()
            .unwrap()
            .find(&summary.serial_hex)
            .is_none()
    );
    assert_eq!(
        client
            .post("/acme/revoke-cert", Some(revoke.clone()))
            .await
            .status,
        StatusCode::OK
    );
    assert!(
        st.state
            .revocations()
            .unwrap()
            .find(&summary.serial_hex)
            .is_some()
    );
    let twice = client.post("/acme/revoke-cert", Some(revoke)).await;
    assert_eq!(
        twice.problem_type(),
        "urn:ietf:params:acme:error:alreadyRevoked"
    );
}
