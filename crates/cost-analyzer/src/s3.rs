//! S3 (aws-sdk-s3): bytes and objects per bucket, prefix and storage class,
//! whether a lifecycle configuration exists, incomplete multipart uploads
//! and their parts, and objects older than the backup retention (by the date
//! in their key, as backup layouts name them, or else their last change).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::Region;
use serde::Serialize;

use crate::Error;

/// What a bucket holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BucketUsage {
    /// Name.
    pub name: String,
    /// Bytes by storage class.
    pub bytes_by_class: BTreeMap<String, f64>,
    /// Objects.
    pub objects: u64,
    /// Bytes and objects by first key segment (`backups/`, `wal/`).
    pub by_prefix: BTreeMap<String, (f64, u64)>,
    /// Whether it has a lifecycle configuration.
    pub lifecycle: bool,
    /// Its rules' ids (and whether any aborts incomplete uploads).
    pub lifecycle_rules: Vec<String>,
    /// Any rule aborting incomplete multipart uploads.
    pub aborts_incomplete_uploads: bool,
    /// Incomplete multipart uploads: count and bytes of their parts.
    pub incomplete_uploads: (u64, f64),
    /// Objects past the retention: count, bytes and storage class bytes.
    pub expired: (u64, f64),
    /// STANDARD bytes older than 30 days (candidates for STANDARD_IA).
    pub standard_cold_bytes: f64,
}

/// Connects to S3 (`endpoint` for a compatible server; credentials from the environment).
pub async fn connect(endpoint: Option<&str>, region: Option<&str>) -> Client {
    let region = match region {
        Some(r) => RegionProviderChain::first_try(Region::new(r.to_owned())),
        None => RegionProviderChain::default_provider().or_else(Region::new("us-east-1")),
    };
    let shared = aws_config::defaults(BehaviorVersion::latest()).region(region).load().await;
    let mut config = aws_sdk_s3::config::Builder::from(&shared);
    if let Some(e) = endpoint {
        config = config.endpoint_url(e).force_path_style(true);
    }
    Client::from_conf(config.build())
}

fn sdk(what: &str, e: impl std::fmt::Display + std::fmt::Debug) -> Error {
    Error::CouldNotRun(format!("S3 {what}: {e:?}"))
}

/// A date `YYYY-MM-DD` (or `YYYYMMDD`) in a key, as seconds since the epoch.
pub fn date_in_key(key: &str) -> Option<i64> {
    let bytes = key.as_bytes();
    for i in 0..bytes.len() {
        let take = |len: usize| key.get(i..i + len);
        let (y, m, d) = if let Some(s) =
            take(10).filter(|s| s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-')
        {
            (s.get(0..4)?, s.get(5..7)?, s.get(8..10)?)
        } else if let Some(s) = take(8).filter(|s| s.bytes().all(|b| b.is_ascii_digit())) {
            (s.get(0..4)?, s.get(4..6)?, s.get(6..8)?)
        } else {
            continue;
        };
        let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i64>(), m.parse::<i64>(), d.parse::<i64>()) else {
            continue;
        };
        if !(1990..=2200).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            continue;
        }
        // Days from the civil date (Howard Hinnant's algorithm).
        let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * m + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return Some((era * 146_097 + doe - 719_468) * 86_400);
    }
    None
}

/// Scans `buckets` (all the account's when empty).
pub async fn scan(
    client: &Client,
    buckets: &[String],
    retention: Duration,
) -> Result<Vec<BucketUsage>, Error> {
    let names = if buckets.is_empty() {
        let listed = client.list_buckets().send().await.map_err(|e| sdk("list buckets", e))?;
        listed.buckets().iter().filter_map(|b| b.name().map(str::to_owned)).collect()
    } else {
        buckets.to_vec()
    };
    let now =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let cutoff = now - retention.as_secs() as i64;
    let cold = now - 30 * 86_400;
    let mut out = Vec::new();
    for name in names {
        let mut usage = BucketUsage { name: name.clone(), ..BucketUsage::default() };
        let mut token = None;
        loop {
            let page = client
                .list_objects_v2()
                .bucket(&name)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| sdk(&format!("list objects of {name}"), e))?;
            for o in page.contents() {
                let key = o.key().unwrap_or_default();
                let size = o.size().unwrap_or(0) as f64;
                let class =
                    o.storage_class().map_or("STANDARD".to_owned(), |c| c.as_str().to_owned());
                *usage.bytes_by_class.entry(class.clone()).or_default() += size;
                usage.objects += 1;
                let prefix =
                    key.split_once('/').map_or("(root)".to_owned(), |(p, _)| format!("{p}/"));
                let entry = usage.by_prefix.entry(prefix).or_default();
                entry.0 += size;
                entry.1 += 1;
                let modified = o.last_modified().map_or(now, |t| t.secs());
                let born = date_in_key(key).map_or(modified, |d| d.min(modified));
                if born < cutoff {
                    usage.expired.0 += 1;
                    usage.expired.1 += size;
                } else if class == "STANDARD" && born < cold {
                    usage.standard_cold_bytes += size;
                }
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        match client.get_bucket_lifecycle_configuration().bucket(&name).send().await {
            Ok(lc) => {
                usage.lifecycle = !lc.rules().is_empty();
                for r in lc.rules() {
                    usage.lifecycle_rules.push(r.id().unwrap_or("(no id)").to_owned());
                    usage.aborts_incomplete_uploads |=
                        r.abort_incomplete_multipart_upload().is_some();
                }
            }
            Err(e) => {
                let code = e
                    .as_service_error()
                    .and_then(|s| aws_sdk_s3::error::ProvideErrorMetadata::code(s))
                    .unwrap_or_default()
                    .to_owned();
                if code != "NoSuchLifecycleConfiguration" {
                    return Err(sdk(&format!("lifecycle of {name}"), e));
                }
            }
        }
        let uploads = client
            .list_multipart_uploads()
            .bucket(&name)
            .send()
            .await
            .map_err(|e| sdk(&format!("multipart uploads of {name}"), e))?;
        for u in uploads.uploads() {
            let (Some(key), Some(id)) = (u.key(), u.upload_id()) else { continue };
            let parts = client
                .list_parts()
                .bucket(&name)
                .key(key)
                .upload_id(id)
                .send()
                .await
                .map_err(|e| sdk(&format!("parts of an upload to {name}/{key}"), e))?;
            usage.incomplete_uploads.0 += 1;
            usage.incomplete_uploads.1 +=
                parts.parts().iter().map(|p| p.size().unwrap_or(0) as f64).sum::<f64>();
        }
        out.push(usage);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_backup_keys() {
        assert_eq!(date_in_key("backups/2024-01-02T03:00:00Z/base.tar.zst"), Some(1_704_153_600));
        assert_eq!(date_in_key("pg/20240102/wal"), Some(1_704_153_600));
        assert_eq!(date_in_key("images/photo-1234.png"), None);
        assert_eq!(date_in_key("x/9999-99-99"), None);
    }
}
