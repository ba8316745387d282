//! The embedded catalog: generated rows held in memory, with a simulated
//! connection pool so pool saturation is observable without a database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::Semaphore;

use super::{CatalogError, CatalogShape, Collection, Nft, injected_query_latency};
use crate::faults::Faults;
use crate::metrics::InUseGuard;

/// Generated collections and NFTs plus an owner index.
#[derive(Debug)]
pub struct MemoryCatalog {
    shape: CatalogShape,
    collections: Vec<Collection>,
    nfts: Vec<Nft>,
    by_owner: HashMap<String, Vec<usize>>,
    pool: Arc<Semaphore>,
    pool_timeout: Duration,
    faults: Faults,
    in_use: IntGauge,
}

impl MemoryCatalog {
    /// Generates the whole catalog of `shape`.
    pub fn new(
        shape: CatalogShape,
        pool_size: u32,
        pool_timeout: Duration,
        faults: Faults,
        in_use: IntGauge,
    ) -> Self {
        let collections: Vec<Collection> =
            (1..=i64::from(shape.collections)).filter_map(|id| shape.collection(id)).collect();
        let nfts: Vec<Nft> = (1..=i64::from(shape.nfts)).filter_map(|id| shape.nft(id)).collect();
        let mut by_owner: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, nft) in nfts.iter().enumerate() {
            by_owner.entry(nft.owner.clone()).or_default().push(index);
        }
        Self {
            shape,
            collections,
            nfts,
            by_owner,
            pool: Arc::new(Semaphore::new(pool_size as usize)),
            pool_timeout,
            faults,
            in_use,
        }
    }

    /// Takes a simulated connection for the duration of one query.
    async fn checkout(
        &self,
    ) -> Result<(tokio::sync::OwnedSemaphorePermit, InUseGuard), CatalogError> {
        let permit = tokio::time::timeout(self.pool_timeout, self.pool.clone().acquire_owned())
            .await
            .map_err(|_| CatalogError::PoolTimeout(self.pool_timeout))?
            .map_err(|_| CatalogError::Database("connection pool closed".to_owned()))?;
        let guard = InUseGuard::new(&self.in_use);
        injected_query_latency(&self.faults).await;
        Ok((permit, guard))
    }

    pub(super) async fn collections(
        &self,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<Collection>, CatalogError> {
        let _conn = self.checkout().await?;
        Ok(self.collections.iter().skip(offset as usize).take(limit as usize).cloned().collect())
    }

    pub(super) async fn collection(&self, id: i64) -> Result<Option<Collection>, CatalogError> {
        let _conn = self.checkout().await?;
        Ok(usize::try_from(id - 1).ok().and_then(|i| self.collections.get(i)).cloned())
    }

    pub(super) async fn collection_nfts(
        &self,
        collection_id: i64,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<Nft>, CatalogError> {
        let _conn = self.checkout().await?;
        let first_token = offset + 1;
        Ok((first_token..first_token + limit)
            .map_while(|token| self.shape.nft_id(collection_id, token))
            .filter_map(|id| self.nfts.get((id - 1) as usize).cloned())
            .collect())
    }

    pub(super) async fn nft(&self, id: i64) -> Result<Option<Nft>, CatalogError> {
        let _conn = self.checkout().await?;
        Ok(usize::try_from(id - 1).ok().and_then(|i| self.nfts.get(i)).cloned())
    }

    pub(super) async fn search(
        &self,
        text: &str,
        limit: i64,
    ) -> Result<Vec<Collection>, CatalogError> {
        let _conn = self.checkout().await?;
        let needle = text.to_lowercase();
        Ok(self
            .collections
            .iter()
            .filter(|c| c.name.to_lowercase().contains(&needle))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    pub(super) async fn owner_nfts(
        &self,
        owner: &str,
        limit: i64,
    ) -> Result<Vec<Nft>, CatalogError> {
        let _conn = self.checkout().await?;
        let owner = owner.to_lowercase();
        Ok(self
            .by_owner
            .get(&owner)
            .map(|indices| {
                indices.iter().take(limit as usize).map(|&i| self.nfts[i].clone()).collect()
            })
            .unwrap_or_default())
    }

    pub(super) async fn ping(&self) -> Result<(), CatalogError> {
        let _conn = self.checkout().await?;
        Ok(())
    }
}
