//! The server API's connection commands under access tokens: `admin`
//! needed (403 without, 401 with no credential), the API key allowed, and
//! `subject` finding every connection of a token's `sub`, including one
//! whose `auth` frame put a new `sub` in force.

use crate::common::*;
use crate::tokens::{
    connect_with, create_topics, hs256_server, request, token, Credential, ADMIN_KEY,
};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn the_commands_need_admin_or_the_key() {
    let server = hs256_server(&[]).await;
    create_topics(&server, &["a"]).await;
    let admin = token(json!({ "admin": true }));
    let reader = token(json!({ "subscribe": ["*"], "publish": ["*"] }));
    let commands = [
        (
            "/disconnect",
            json!({ "subject": "nobody" }),
            "disconnected",
        ),
        (
            "/unsubscribe",
            json!({ "topic": "a", "subject": "nobody" }),
            "unsubscribed",
        ),
    ];
    for (path, body, field) in commands {
        let (status, reply, challenge) =
            request(&server, Method::POST, path, None, Some(body.clone())).await;
        assert_eq!(status, 401, "{path} without a credential: {reply}");
        assert!(challenge.is_some());
        let (status, reply, _) = request(
            &server,
            Method::POST,
            path,
            Some(Credential::Bearer(&reader)),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 403, "{path} without admin: {reply}");
        assert_eq!(reply["error"]["code"], "FORBIDDEN", "{reply}");
        for credential in [Credential::Bearer(&admin), Credential::Key(ADMIN_KEY)] {
            let (status, reply, _) = request(
                &server,
                Method::POST,
                path,
                Some(credential),
                Some(body.clone()),
            )
            .await;
            assert_eq!(status, 200, "{path}: {reply}");
            assert_eq!(reply[field], 0, "{reply}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn subject_picks_every_connection_of_a_token_s_sub() {
    let server = hs256_server(&[]).await;
    create_topics(&server, &["a"]).await;
    let user_42 = token(json!({ "sub": "user-42", "subscribe": ["*"] }));
    let other = token(json!({ "sub": "user-7", "subscribe": ["*"] }));
    let mut phone = connect_with(&server, &user_42).await;
    subscribe(&mut phone, "a", 0).await;
    let mut laptop = connect_with(&server, &other).await;
    // The laptop's new token makes it user-42's too.
    send(
        &mut laptop,
        json!({ "type": "auth", "token": user_42, "request_id": "r" }),
    )
    .await;
    assert_eq!(recv(&mut laptop).await["type"], "ack");
    subscribe(&mut laptop, "a", 0).await;
    let mut bystander = connect_with(&server, &other).await;
    subscribe(&mut bystander, "a", 0).await;

    let body = json!({ "topic": "a", "subject": "user-42" });
    let (status, reply, _) = request(
        &server,
        Method::POST,
        "/unsubscribe",
        Some(Credential::Key(ADMIN_KEY)),
        Some(body),
    )
    .await;
    assert_eq!((status, &reply), (200, &json!({ "unsubscribed": 2 })));
    for ws in [&mut phone, &mut laptop] {
        assert_eq!(recv(ws).await["msg"], "unsubscribed");
    }

    let body = json!({ "subject": "user-42", "reason": "banned" });
    let (status, reply, _) = request(
        &server,
        Method::POST,
        "/disconnect",
        Some(Credential::Key(ADMIN_KEY)),
        Some(body),
    )
    .await;
    assert_eq!((status, &reply), (200, &json!({ "disconnected": 2 })));
    for ws in [&mut phone, &mut laptop] {
        assert_eq!(close_frame_of(ws).await.0, 4000);
    }
    ping_pong(&mut bystander, "user-7 stays").await;
    server.stop().await;
}
