//! Who a Flight call is: its tenant, from a bearer token (configured, or handed out by the
//! handshake for basic credentials), basic credentials themselves, or `x-scope-orgid`.
//!
//! With multitenancy off every call reads the single tenant, and the handshake hands a token
//! to anyone. With it on, a call must name its tenant one of these ways; an unknown token or
//! wrong credentials are `UNAUTHENTICATED`.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use parking_lot::Mutex;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::config::FlightSettings;
use crate::tenant::{self, ORG_ID_HEADER, SINGLE_TENANT};

/// Tokens handed out by the handshake are kept at most this many; the oldest go first.
const MAX_SESSIONS: usize = 100_000;

/// Resolves the tenant of Flight calls.
#[derive(Debug)]
pub struct Auth {
    multitenancy: bool,
    tokens: HashMap<String, String>,
    users: HashMap<String, (String, String)>,
    sessions: Mutex<Sessions>,
}

#[derive(Debug, Default)]
struct Sessions {
    tenants: HashMap<String, String>,
    order: std::collections::VecDeque<String>,
}

/// Who makes a call: its tenant, and its session — the bearer token it carries, the user of
/// its basic credentials, or, with neither, its tenant. Prepared statements belong to a
/// session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant whose tables the call reads.
    pub tenant: String,
    /// The session's identity.
    pub session: String,
}

/// The credentials a call carries.
enum Credentials<'a> {
    Bearer(&'a str),
    Basic(String, String),
    None,
}

fn credentials(metadata: &MetadataMap) -> Result<Credentials<'_>, Status> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(Credentials::None);
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Ok(Credentials::Bearer(token.trim()));
    }
    if let Some(encoded) = value.strip_prefix("Basic ") {
        let decoded = BASE64
            .decode(encoded.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| Status::unauthenticated("basic credentials are not base64 text"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| Status::unauthenticated("basic credentials must be user:password"))?;
        return Ok(Credentials::Basic(user.to_string(), password.to_string()));
    }
    Err(Status::unauthenticated(
        "the authorization header must be Bearer or Basic",
    ))
}

impl Auth {
    /// Tenant resolution from `settings`.
    pub fn new(settings: &FlightSettings, multitenancy: bool) -> Self {
        Self {
            multitenancy,
            tokens: settings.tokens.clone().into_iter().collect(),
            users: settings
                .users
                .iter()
                .map(|u| (u.username.clone(), (u.password.clone(), u.tenant.clone())))
                .collect(),
            sessions: Mutex::new(Sessions::default()),
        }
    }

    /// The tenant of a call and the session it belongs to.
    pub fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let tenant = self.tenant(metadata)?;
        let session = match credentials(metadata)? {
            Credentials::Bearer(token) => format!("token {token}"),
            Credentials::Basic(user, _) => format!("user {user}"),
            Credentials::None => format!("tenant {tenant}"),
        };
        Ok(Caller { tenant, session })
    }

    /// The tenant of a call.
    pub fn tenant(&self, metadata: &MetadataMap) -> Result<String, Status> {
        let credentials = credentials(metadata)?;
        if !self.multitenancy {
            return Ok(SINGLE_TENANT.to_string());
        }
        match credentials {
            Credentials::Bearer(token) => self.token_tenant(token),
            Credentials::Basic(user, password) => self.user_tenant(&user, &password),
            Credentials::None => {
                let org_id = metadata.get(ORG_ID_HEADER).and_then(|v| v.to_str().ok());
                tenant::resolve(org_id, true).map_err(|e| match e {
                    tenant::TenantError::Missing => Status::unauthenticated(
                        "no tenant: send a bearer token, basic credentials or x-scope-orgid",
                    ),
                    e => Status::invalid_argument(e.to_string()),
                })
            }
        }
    }

    /// The handshake: checks the call's credentials and hands out a bearer token for its
    /// tenant.
    pub fn handshake(&self, metadata: &MetadataMap) -> Result<String, Status> {
        let tenant = match credentials(metadata)? {
            Credentials::Bearer(token) if self.multitenancy => {
                self.token_tenant(token)?;
                return Ok(token.to_string());
            }
            Credentials::Basic(user, password) if self.multitenancy => {
                self.user_tenant(&user, &password)?
            }
            _ => self.tenant(metadata)?,
        };
        let token = uuid::Uuid::now_v7().simple().to_string();
        let mut sessions = self.sessions.lock();
        if sessions.order.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.order.pop_front()
        {
            sessions.tenants.remove(&oldest);
        }
        sessions.order.push_back(token.clone());
        sessions.tenants.insert(token.clone(), tenant);
        Ok(token)
    }

    fn token_tenant(&self, token: &str) -> Result<String, Status> {
        if let Some(tenant) = self.tokens.get(token) {
            return Ok(tenant.clone());
        }
        self.sessions
            .lock()
            .tenants
            .get(token)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown bearer token"))
    }

    fn user_tenant(&self, user: &str, password: &str) -> Result<String, Status> {
        match self.users.get(user) {
            Some((expected, tenant)) if expected == password => Ok(tenant.clone()),
            _ => Err(Status::unauthenticated(format!(
                "wrong user name or password for {user:?}"
            ))),
        }
    }
}
