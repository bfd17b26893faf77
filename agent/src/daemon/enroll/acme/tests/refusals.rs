//! Refusals and failed validations, each with the ACME error type a client acts on.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_their_acme_error_type() {
    let (app, _st, _dir) = server(1).await;
    let mut client = Client::new(&app).await;
    client.register().await;

    let outside = client
        .post(
            "/acme/new-order",
            Some(json!({"identifiers": [{"type": "dns", "value": "www.example.com"}]})),
        )
        .await;
    assert_eq!(outside.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        outside.problem_type(),
        "urn:ietf:params:acme:error:rejectedIdentifier"
    );
    assert_eq!(outside.header("content-type"), "application/problem+json");

    let url = format!("{BASE}/acme/new-order");
    let payload = json!({"identifiers": [{"type": "dns", "value": "a.internal"}]});
    let body = client.jws(&url, Some(&payload), &client.nonce.clone());
    assert_eq!(
        client
            .post_raw("/acme/new-order", body.clone())
            .await
            .status,
        StatusCode::CREATED
    );
    let replayed = client.post_raw("/acme/new-order", body).await;
    assert_eq!(
        replayed.problem_type(),
        "urn:ietf:params:acme:error:badNonce"
    );
    assert!(
        !replayed.header("replay-nonce").is_empty(),
        "badNonce must come with a fresh nonce"
    );

    let elsewhere = client.jws(
        &format!("{BASE}/acme/new-account"),
        Some(&payload),
        &client.nonce.clone(),
    );
    let wrong_url = client.post_raw("/acme/new-order", elsewhere).await;
    assert_eq!(
        wrong_url.problem_type(),
        "urn:ietf:params:acme:error:unauthorized"
    );

    let mut stranger = Client::new(&app).await;
    stranger.kid = Some(format!("{BASE}/acme/acct/nobody"));
    let unknown = stranger.post("/acme/new-order", Some(payload)).await;
    assert_eq!(
        unknown.problem_type(),
        "urn:ietf:params:acme:error:accountDoesNotExist"
    );

    let get = send(
        &app,
        Request::get("/acme/new-order")
            .header("host", HOST)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.problem_type(), "urn:ietf:params:acme:error:malformed");

    let wrong_type = Request::post("/acme/new-order")
        .header("host", HOST)
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(
        send(&app, wrong_type).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_http01_validation_makes_the_order_invalid() {
    let answers = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let port = http01_responder(answers.clone()).await;
    let (app, _st, _dir) = server(port).await;
    let mut client = Client::new(&app).await;
    client.register().await;
    let (order_url, authz_url, http01) = client.order_with_http01("other.internal").await;
    let token = http01["token"].as_str().unwrap().to_string();
    answers
        .lock()
        .unwrap()
        .insert(token, "not the key authorization".into());
    client
        .post(http01["url"].as_str().unwrap(), Some(json!({})))
        .await;
    let authz = client.settled_authz(&authz_url).await;
    assert_eq!(authz["status"], "invalid");
    let chall = challenge_of(&authz, "http-01");
    assert_eq!(
        chall["error"]["type"],
        "urn:ietf:params:acme:error:incorrectResponse"
    );
    assert_eq!(
        client.post(&order_url, None).await.json()["status"],
        "invalid"
    );
    let finalize = client
        .post(
            &format!("{order_url}/finalize"),
            Some(json!({"csr": csr(&["other.internal"])})),
        )
        .await;
    assert_eq!(
        finalize.problem_type(),
        "urn:ietf:params:acme:error:orderNotReady"
    );
}
