//! Tenant ids: where they come from and which are valid.

/// The tenant of every request when multitenancy is off.
pub const SINGLE_TENANT: &str = "single-tenant";
/// The HTTP header (and, lowercased, gRPC metadata key) that names the tenant.
pub const ORG_ID_HEADER: &str = "x-scope-orgid";
/// Longest accepted tenant id.
pub const MAX_TENANT_LEN: usize = 150;

/// Why a request's tenant was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TenantError {
    #[error("no org id")]
    Missing,
    #[error(
        "tenant id {0:?} is not valid: use up to 150 characters from a-z A-Z 0-9 ! - _ . * ' ( ), not '.' or '..'"
    )]
    Invalid(String),
}

/// Resolves the tenant of a request from its org-id header value.
///
/// With multitenancy off every request belongs to [`SINGLE_TENANT`]. With it on the header is
/// required; an empty value counts as absent.
pub fn resolve(header: Option<&str>, multitenancy: bool) -> Result<String, TenantError> {
    if !multitenancy {
        return Ok(SINGLE_TENANT.to_string());
    }
    let id = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(TenantError::Missing)?;
    let valid_char = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '!' | '-' | '_' | '.' | '*' | '\'' | '(' | ')')
    };
    if id.len() > MAX_TENANT_LEN || id == "." || id == ".." || !id.chars().all(valid_char) {
        return Err(TenantError::Invalid(id.to_string()));
    }
    Ok(id.to_string())
}

/// Resolves the tenants a query reads: like [`resolve`], but `a|b|c` names several tenants
/// whose data the query combines. Each must be valid; duplicates count once.
pub fn resolve_many(header: Option<&str>, multitenancy: bool) -> Result<Vec<String>, TenantError> {
    if !multitenancy {
        return Ok(vec![SINGLE_TENANT.to_string()]);
    }
    let header = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(TenantError::Missing)?;
    let mut tenants: Vec<String> = Vec::new();
    for id in header.split('|') {
        let id = resolve(Some(id), true)?;
        if !tenants.contains(&id) {
            tenants.push(id);
        }
    }
    Ok(tenants)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_multitenancy_everything_is_single_tenant() {
        assert_eq!(resolve(Some("acme"), false).unwrap(), SINGLE_TENANT);
        assert_eq!(resolve(None, false).unwrap(), SINGLE_TENANT);
    }

    #[test]
    fn with_multitenancy_the_header_is_required_and_checked() {
        assert_eq!(resolve(Some(""), true), Err(TenantError::Missing));
        assert_eq!(resolve(Some("acme-1"), true).unwrap(), "acme-1");
        assert!(matches!(
            resolve(Some("../x"), true),
            Err(TenantError::Invalid(_))
        ));
        assert!(matches!(
            resolve(Some(".."), true),
            Err(TenantError::Invalid(_))
        ));
    }

    #[test]
    fn several_tenants_are_separated_by_bars() {
        assert_eq!(resolve_many(Some("a|b|a"), true).unwrap(), ["a", "b"]);
        assert_eq!(resolve_many(Some("x"), false).unwrap(), [SINGLE_TENANT]);
        assert_eq!(resolve_many(Some("a||b"), true), Err(TenantError::Missing));
        assert!(matches!(
            resolve_many(Some("a|.."), true),
            Err(TenantError::Invalid(_))
        ));
    }
}
