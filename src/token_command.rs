//! `ringcast token`: mints an HS256 access token with the configured
//! `JWT_SECRET`, for testing and scripts. Production tokens come from the
//! application's backend (see the README); RS256/ES256 tokens need the
//! private key, which the broker never holds.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::{mint_hs256, Claims};
use crate::config::{Config, TokenArgs};

/// The token for `args`, or why none can be made.
pub fn mint(config: &Config, args: &TokenArgs) -> Result<String, String> {
    let secret = config
        .jwt_secret
        .as_deref()
        .ok_or("ringcast token signs with JWT_SECRET (HS256): set it")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970")?;
    let claims = Claims {
        exp: (now + args.ttl).as_secs(),
        sub: args.sub.clone(),
        aud: config.jwt_audience.clone(),
        subscribe: args.subscribe.clone(),
        publish: args.publish.clone(),
        admin: args.admin,
    };
    Ok(mint_hs256(secret, &claims))
}

/// Prints the token on standard output, or the reason on standard error.
pub fn run(config: &Config, args: &TokenArgs) -> ExitCode {
    match mint(config, args) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("ringcast token: {why}");
            ExitCode::FAILURE
        }
    }
}
