//! Pagination parameters `?page=&size=`: page from 0, size 1..=100 (default 20); anything
//! else is a 400, never silently clamped.

use std::collections::HashMap;

use futures::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::Document;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest page size served.
pub(crate) const MAX_SIZE: u64 = 100;
const DEFAULT_SIZE: u64 = 20;

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Page number, from 0.
    pub page: u64,
    /// Items per page.
    pub size: u64,
}

impl Page {
    /// Reads `page` and `size` from the query; unknown parameters are refused.
    pub fn from_query(query: &HashMap<String, String>) -> Result<Page, ApiError> {
        if let Some(unknown) = query.keys().find(|k| *k != "page" && *k != "size") {
            return Err(ApiError::bad_request(
                Some(unknown),
                format!("unknown query parameter `{unknown}` (expected page and size)"),
            ));
        }
        let number = |name: &str, default: u64| -> Result<u64, ApiError> {
            match query.get(name) {
                None => Ok(default),
                Some(v) => v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(
                        Some(name),
                        format!("`{name}` must be a whole number ≥ 0, got `{v}`"),
                    )
                }),
            }
        };
        let page = number("page", 0)?;
        let size = number("size", DEFAULT_SIZE)?;
        if !(1..=MAX_SIZE).contains(&size) {
            return Err(ApiError::bad_request(
                Some("size"),
                format!("`size` must be from 1 to {MAX_SIZE}, got {size}"),
            ));
        }
        if page
            .checked_mul(size)
            .is_none_or(|skip| skip > i64::MAX as u64)
        {
            return Err(ApiError::bad_request(Some("page"), "`page` is too large"));
        }
        Ok(Page { page, size })
    }

    /// Documents to skip.
    pub fn skip(&self) -> u64 {
        self.page * self.size
    }

    /// This page of `collection` in `sort` order, and the collection's estimated size.
    pub async fn fetch<T>(
        &self,
        collection: &Collection<T>,
        sort: Document,
    ) -> Result<(Vec<T>, u64), ApiError>
    where
        T: DeserializeOwned + Send + Sync,
    {
        let items = collection
            .find(mongodb::bson::doc! {})
            .sort(sort)
            .skip(self.skip())
            .limit(self.size as i64)
            .await
            .map_err(ApiError::database)?
            .try_collect()
            .await
            .map_err(ApiError::database)?;
        let total = collection
            .estimated_document_count()
            .await
            .map_err(ApiError::database)?;
        Ok((items, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(
            Page::from_query(&query(&[])).unwrap(),
            Page { page: 0, size: 20 }
        );
        let p = Page::from_query(&query(&[("page", "3"), ("size", "100")])).unwrap();
        assert_eq!(p.skip(), 300);
        for bad in [
            vec![("size", "0")],
            vec![("size", "101")],
            vec![("page", "-1")],
            vec![("page", "x")],
            vec![("page", "18446744073709551615"), ("size", "100")],
            vec![("limit", "5")],
        ] {
            assert!(Page::from_query(&query(&bad)).is_err(), "{bad:?}");
        }
    }
}
