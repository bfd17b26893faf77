//! The addresses of a Vault/OpenBao cluster's nodes: each one normalised and checked,
//! the list ordered, non-empty and free of duplicates. One parser for every source (a
//! comma-separated `VAULT_ADDR`, a list from code or the agent's configuration), used
//! again by the client because `VaultSettings`' fields are public.

use keyward_core::Error;
use reqwest::Url;

/// Checks `address` is an `http(s)://HOST[:PORT][/PATH]` URL without query or
/// credentials, and returns it normalised (host in lower case, default port dropped,
/// no trailing `/`), so that two spellings of one node compare equal.
pub(crate) fn normalize(address: &str) -> Result<String, Error> {
    let trimmed = address.trim().trim_end_matches('/');
    let url = Url::parse(trimmed)
        .map_err(|e| Error::InvalidInput(format!("Vault address '{trimmed}' is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::InvalidInput(format!(
            "Vault address '{trimmed}' must be http://HOST[:PORT] or https://HOST[:PORT]"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(Error::InvalidInput(format!(
            "Vault address '{trimmed}' must not carry a query, fragment or credentials"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Normalises every address of `list`, keeping the order; refuses an empty list, an
/// empty entry and a node listed twice, each with one line naming it.
pub(crate) fn normalize_list<S: AsRef<str>>(list: &[S]) -> Result<Vec<String>, Error> {
    if list.is_empty() {
        return Err(Error::InvalidInput(
            "the Vault address list is empty".into(),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let entry = entry.as_ref();
        if entry.trim().is_empty() {
            return Err(Error::InvalidInput(format!(
                "Vault address {} of {} is empty",
                i + 1,
                list.len()
            )));
        }
        let address = normalize(entry)?;
        if out.contains(&address) {
            return Err(Error::InvalidInput(format!(
                "Vault address '{address}' is listed twice"
            )));
        }
        out.push(address);
    }
    Ok(out)
}

/// The entries of a comma-separated `VAULT_ADDR` value, in order (empty ones kept, for
/// [`normalize_list`] to refuse).
pub(crate) fn split_list(value: &str) -> Vec<&str> {
    value.split(',').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(value: &str) -> Result<Vec<String>, String> {
        normalize_list(&split_list(value)).map_err(|e| e.to_string())
    }

    #[test]
    fn one_address_stays_one() {
        assert_eq!(list("http://a:8200/").unwrap(), ["http://a:8200"]);
    }

    #[test]
    fn comma_separated_addresses_keep_their_order_and_are_normalised() {
        assert_eq!(
            list(" https://Node-2.example:8200/ ,http://127.0.0.1:8201,https://n3:443").unwrap(),
            [
                "https://node-2.example:8200",
                "http://127.0.0.1:8201",
                "https://n3"
            ]
        );
        assert_eq!(
            list("https://lb.example/vault/,http://[::1]:8200").unwrap(),
            ["https://lb.example/vault", "http://[::1]:8200"]
        );
    }

    #[test]
    fn duplicates_are_refused_in_any_spelling() {
        for value in [
            "http://a:8200,http://a:8200",
            "http://a:8200,http://A:8200/",
            "https://a,http://b,https://a:443",
        ] {
            let e = list(value).unwrap_err();
            assert!(e.contains("listed twice"), "{value}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        // The same host on another port or scheme is another node.
        assert_eq!(
            list("http://a:8200,http://a:8201,https://a:8200")
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn bad_entries_are_named() {
        for (value, part) in [
            ("http://a,,http://b", "address 2 of 3 is empty"),
            ("http://a,", "address 2 of 2 is empty"),
            ("http://a,ftp://b", "'ftp://b' must be http"),
            ("http://a,b:8200", "'b:8200' must be http"),
            ("http://a,http://b?x=1", "must not carry a query"),
            ("http://u:p@a", "must not carry"),
            ("http://a,not a url", "'not a url' is not a URL"),
        ] {
            let e = list(value).unwrap_err();
            assert!(e.contains(part), "{value}: {e}");
        }
        let empty: [&str; 0] = [];
        assert!(
            normalize_list(&empty)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }
}
