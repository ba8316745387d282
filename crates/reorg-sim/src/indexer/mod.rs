//! [`ReferenceIndexer`]: a reorg-aware ERC-1155 indexer writing to
//! PostgreSQL through the JSON-RPC API, the baseline other indexers are
//! measured against.
//!
//! Each step reads the node's head, fetches the next headers in one batch and
//! checks that the first one's parent is the stored head. A mismatch is a
//! reorg: the indexer walks back block by block to the common ancestor,
//! then rolls back and re-indexes the new branch **in one transaction**,
//! recording the reorg and the NFTs it affected. A reorg deeper than the
//! finality window halts it (flag in the checkpoint, nonzero exit) with the
//! data as it was. A lagging node (a head below ours, a block it does not
//! have, logs missing against the header's bloom) is waited out, never
//! mistaken for a reorg. The checkpoint commits with the data, so a killed
//! indexer resumes where its last transaction ended.

pub mod store;

use std::time::Duration;

use alloy_primitives::BloomInput;
use tokio_postgres::Client;

use crate::erc1155::event_signatures;
use crate::node::{HeaderInfo, NodeClient, NodeError};
use store::{Checkpoint, FetchedBlock};

/// How the reference indexer runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexerConfig {
    /// PostgreSQL schema of its tables.
    pub schema: String,
    /// First block to index.
    pub start_block: u64,
    /// Deepest reorg it follows; deeper ones halt it.
    pub finality_depth: u64,
    /// Blocks fetched and committed per transaction.
    pub batch_blocks: u64,
    /// Pause when there is nothing new.
    pub poll_interval: Duration,
    /// Deliberately faulty mode: ignore parent-hash mismatches and never roll back.
    pub no_rollback: bool,
}

impl Default for IndexerConfig {
    fn default() -> Self {
        IndexerConfig {
            schema: "reorg_sim".to_owned(),
            start_block: 0,
            finality_depth: 64,
            batch_blocks: 100,
            poll_interval: Duration::from_millis(500),
            no_rollback: false,
        }
    }
}

/// Why the indexer stopped or could not take a step.
#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    /// The node failed; the step changed nothing and can be retried.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// PostgreSQL failed.
    #[error("PostgreSQL: {context}: {source} (is the database up? check --database-url)")]
    Db {
        /// What was being done.
        context: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// A row of the indexer's own tables held something its schema does
    /// not allow: a table changed by hand or another program's table of
    /// the same name.
    #[error(
        "PostgreSQL: {context}: {detail} (the indexer's tables hold unexpected data: \
         index into a fresh --schema, or repair the table)"
    )]
    Data {
        /// What was being done.
        context: String,
        /// Which table and column, and what was wrong.
        detail: String,
    },
    /// A reorg deeper than the finality window: halted, data left as it was.
    #[error(
        "halted: reorg at block {detected_at} replaces more than {finality_depth} blocks below our head {head} \
         (no common ancestor within the finality window); the indexed data is left at block {head}. \
         Re-sync from a trusted checkpoint, then run `reorg-sim index --clear-halt`"
    )]
    ReorgBeyondFinality {
        /// Block whose parent did not match.
        detected_at: u64,
        /// Our head when it happened.
        head: u64,
        /// The window.
        finality_depth: u64,
    },
    /// Halted by an earlier run.
    #[error("halted by an earlier run: {0}")]
    Halted(String),
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// PostgreSQL could not be reached (the message names the host and,
    /// for TLS, the handshake's reason).
    #[error("{0} (is the database up? check --database-url and its sslmode/sslrootcert)")]
    Connect(String),
}

impl IndexerError {
    /// True when the indexer stopped on purpose to protect its data.
    pub fn is_halt(&self) -> bool {
        matches!(self, IndexerError::ReorgBeyondFinality { .. } | IndexerError::Halted(_))
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Nothing new (caught up, or the node is lagging).
    Idle {
        /// Our head.
        head: Option<u64>,
    },
    /// Blocks indexed.
    Progress {
        /// New head.
        head: u64,
        /// Blocks added.
        blocks: u64,
        /// Events added.
        events: u64,
    },
    /// A reorg rolled back and the new branch's first batch indexed.
    Reorged {
        /// Common ancestor.
        ancestor: u64,
        /// Blocks rolled back.
        depth: u64,
        /// New head.
        head: u64,
    },
}

/// Connects to PostgreSQL as libpq would: `sslmode` and `sslrootcert` in
/// the URL are honoured (shared-types' `pg`).
pub async fn connect_db(url: &str) -> Result<Client, IndexerError> {
    let options = shared_types::pg::PgConnectOptions::parse(url).map_err(|e| {
        IndexerError::Config(format!("--database-url {}: {e}", shared_types::redact_url(url)))
    })?;
    options.connect(Duration::from_secs(10)).await.map_err(|e| IndexerError::Connect(e.to_string()))
}

/// The reference indexer.
#[derive(Debug)]
pub struct ReferenceIndexer {
    node: NodeClient,
    db: Client,
    config: IndexerConfig,
}

impl ReferenceIndexer {
    /// Connects to the database, creates the tables if missing.
    pub async fn connect(
        rpc_url: &str,
        database_url: &str,
        config: IndexerConfig,
    ) -> Result<Self, IndexerError> {
        if !store::valid_schema(&config.schema) {
            return Err(IndexerError::Config(format!(
                "invalid schema {:?}: use lower-case letters, digits and _",
                config.schema
            )));
        }
        if config.batch_blocks == 0 {
            return Err(IndexerError::Config("--batch-blocks must be at least 1".to_owned()));
        }
        let db = connect_db(database_url).await?;
        store::migrate(&db, &config.schema).await.map_err(db_err("create the indexer tables"))?;
        Ok(ReferenceIndexer { node: NodeClient::new(rpc_url), db, config })
    }

    /// The configuration.
    pub fn config(&self) -> &IndexerConfig {
        &self.config
    }

    /// The last committed block.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, IndexerError> {
        store::checkpoint(&self.db, &self.config.schema)
            .await
            .map_err(db_err("read the checkpoint"))
    }

    /// Clears a halt flag left by a deep reorg.
    pub async fn clear_halt(&self) -> Result<bool, IndexerError> {
        Ok(store::clear_halt(&self.db, &self.config.schema)
            .await
            .map_err(db_err("clear the halt"))?
            > 0)
    }

    /// Follows the node until `stop` resolves or the indexer halts. Node
    /// errors are retried after the poll interval.
    pub async fn follow(&mut self, stop: impl Future<Output = ()>) -> Result<(), IndexerError> {
        tokio::pin!(stop);
        loop {
            let pause = match self.sync_once().await {
                Ok(SyncOutcome::Idle { .. }) => true,
                Ok(SyncOutcome::Progress { head, blocks, events }) => {
                    tracing::debug!(head, blocks, events, "indexed");
                    false
                }
                Ok(SyncOutcome::Reorged { ancestor, depth, head }) => {
                    tracing::info!(ancestor, depth, head, "reorg rolled back and re-indexed");
                    false
                }
                Err(IndexerError::Node(e)) => {
                    tracing::warn!("{e}; retrying");
                    true
                }
                Err(e) => return Err(e),
            };
            if pause {
                tokio::select! {
                    () = &mut stop => return Ok(()),
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                }
            } else if futures_ready(&mut stop).await {
                return Ok(());
            }
        }
    }

    /// Takes one step: index the next batch, handle a reorg, or find nothing new.
    pub async fn sync_once(&mut self) -> Result<SyncOutcome, IndexerError> {
        let schema = self.config.schema.clone();
        let checkpoint = self.checkpoint().await?;
        if let Some(reason) = checkpoint.as_ref().and_then(|c| c.halted.clone()) {
            return Err(IndexerError::Halted(reason));
        }
        let node_head = self.node.block_number().await?;
        let (next, parent) = match &checkpoint {
            None => (self.config.start_block, None),
            Some(c) => (c.number + 1, Some(c.hash)),
        };
        let idle = SyncOutcome::Idle { head: checkpoint.as_ref().map(|c| c.number) };
        if node_head < next {
            // Nothing new, or a node behind us. Only a different hash at a
            // height both have is a reorg; a missing block is lag.
            let Some(cp) = &checkpoint else { return Ok(idle) };
            let probe = node_head.min(cp.number);
            if probe < self.config.start_block || self.config.no_rollback {
                return Ok(idle);
            }
            let Some(theirs) = self.node.header(probe).await? else { return Ok(idle) };
            let ours = store::stored_hash(&self.db, &schema, probe)
                .await
                .map_err(db_err("read a block hash"))?;
            if ours == Some(theirs.hash) {
                return Ok(idle);
            }
            return self.handle_reorg(cp, probe, node_head).await;
        }
        let last = (next + self.config.batch_blocks - 1).min(node_head);
        let headers = linked(self.node.headers(next, last).await?);
        let Some(first) = headers.first() else { return Ok(idle) };
        if let (Some(parent), Some(cp)) = (parent, &checkpoint)
            && first.parent_hash != parent
            && !self.config.no_rollback
        {
            return self.handle_reorg(cp, first.number, node_head).await;
        }
        let Some(blocks) = self.fetch_logs(headers).await? else { return Ok(idle) };
        let tx = self.db.transaction().await.map_err(db_err("begin"))?;
        let (touched, events) = store::apply_blocks(&tx, &schema, &blocks, self.config.no_rollback)
            .await
            .map_err(db_err("store blocks"))?;
        store::refresh_collections(&tx, &schema, &touched)
            .await
            .map_err(db_err("refresh collection statistics"))?;
        tx.commit().await.map_err(db_err("commit"))?;
        let head = blocks.last().map_or(next, |b| b.header.number);
        Ok(SyncOutcome::Progress { head, blocks: blocks.len() as u64, events })
    }

    /// Walks back from `detected_at - 1` to the common ancestor, then rolls
    /// back and re-indexes in one transaction, or halts beyond finality.
    async fn handle_reorg(
        &mut self,
        cp: &Checkpoint,
        detected_at: u64,
        node_head: u64,
    ) -> Result<SyncOutcome, IndexerError> {
        let schema = self.config.schema.clone();
        let idle = SyncOutcome::Idle { head: Some(cp.number) };
        let mut n = detected_at.saturating_sub(1).min(cp.number);
        let ancestor = loop {
            if cp.number - n > self.config.finality_depth || n < self.config.start_block {
                let e = IndexerError::ReorgBeyondFinality {
                    detected_at,
                    head: cp.number,
                    finality_depth: self.config.finality_depth,
                };
                store::halt(&self.db, &schema, &e.to_string())
                    .await
                    .map_err(db_err("record the halt"))?;
                tracing::error!("{e}");
                return Err(e);
            }
            let Some(theirs) = self.node.header(n).await? else { return Ok(idle) };
            let ours = store::stored_hash(&self.db, &schema, n)
                .await
                .map_err(db_err("read a block hash"))?;
            if ours == Some(theirs.hash) {
                break theirs;
            }
            n -= 1;
        };
        let last = (ancestor.number + self.config.batch_blocks).min(node_head);
        let headers = linked(self.node.headers(ancestor.number + 1, last).await?);
        if headers.first().is_some_and(|h| h.parent_hash != ancestor.hash) {
            return Ok(idle); // the node moved again; start over next step
        }
        let new_head = headers.last().map_or(ancestor.hash, |h| h.hash);
        let Some(blocks) = self.fetch_logs(headers).await? else { return Ok(idle) };
        let tx = self.db.transaction().await.map_err(db_err("begin"))?;
        let undone = store::rollback(
            &tx,
            &schema,
            ancestor.number,
            detected_at,
            (cp.number, cp.hash),
            new_head,
        )
        .await
        .map_err(db_err("roll back"))?;
        let (mut touched, _) = store::apply_blocks(&tx, &schema, &blocks, false)
            .await
            .map_err(db_err("re-index the new branch"))?;
        if blocks.is_empty() {
            // A shorter new branch whose blocks we already hold up to the ancestor.
            tx.execute(
                &format!("UPDATE {schema}.checkpoint SET number = $1, hash = $2 WHERE id = 1"),
                &[&i64::try_from(ancestor.number).unwrap_or(i64::MAX), &ancestor.hash.to_vec()],
            )
            .await
            .map_err(db_err("move the checkpoint"))?;
        }
        touched.extend(undone.touched);
        store::refresh_collections(&tx, &schema, &touched)
            .await
            .map_err(db_err("refresh collection statistics"))?;
        tx.commit().await.map_err(db_err("commit the reorg"))?;
        let head = blocks.last().map_or(ancestor.number, |b| b.header.number);
        Ok(SyncOutcome::Reorged {
            ancestor: ancestor.number,
            depth: cp.number - ancestor.number,
            head,
        })
    }

    /// Logs for `headers`, checked against them: every log must belong to a
    /// fetched header, and a header whose bloom announces our events must get
    /// some (else the block is re-read by hash). `None`: the node is
    /// inconsistent or lagging, try again later.
    async fn fetch_logs(
        &self,
        headers: Vec<HeaderInfo>,
    ) -> Result<Option<Vec<FetchedBlock>>, IndexerError> {
        let (Some(first), Some(last)) = (headers.first(), headers.last()) else {
            return Ok(Some(Vec::new()));
        };
        let logs = self.node.erc1155_logs(first.number, last.number).await?;
        let mut blocks: Vec<FetchedBlock> =
            headers.into_iter().map(|header| FetchedBlock { header, logs: Vec::new() }).collect();
        let base = blocks[0].header.number;
        for log in logs {
            let slot = log
                .block_number
                .checked_sub(base)
                .and_then(|i| blocks.get_mut(usize::try_from(i).ok()?));
            match slot {
                Some(block) if block.header.hash == log.block_hash => block.logs.push(log),
                _ => return Ok(None),
            }
        }
        let signatures = event_signatures();
        for block in &mut blocks {
            let announced = signatures
                .iter()
                .any(|s| block.header.logs_bloom.contains_input(BloomInput::Raw(s.as_slice())));
            if announced && block.logs.is_empty() {
                match self.node.erc1155_logs_at(block.header.hash).await {
                    Ok(logs) if logs.iter().all(|l| l.block_hash == block.header.hash) => {
                        block.logs = logs
                    }
                    Ok(_) | Err(NodeError::Rpc { .. }) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            }
            block.logs.sort_by_key(|l| l.log_index);
        }
        Ok(Some(blocks))
    }
}

fn db_err<E: Into<store::StoreError>>(context: &str) -> impl FnOnce(E) -> IndexerError + '_ {
    move |error| match error.into() {
        store::StoreError::Db(source) => IndexerError::Db { context: context.to_owned(), source },
        column @ store::StoreError::Column { .. } => {
            IndexerError::Data { context: context.to_owned(), detail: column.to_string() }
        }
    }
}

/// The longest prefix of `headers` in which each links to the one before.
fn linked(headers: Vec<HeaderInfo>) -> Vec<HeaderInfo> {
    let mut out: Vec<HeaderInfo> = Vec::with_capacity(headers.len());
    for h in headers {
        if out.last().is_some_and(|prev: &HeaderInfo| prev.hash != h.parent_hash) {
            break;
        }
        out.push(h);
    }
    out
}

/// Polls `stop` once without waiting.
async fn futures_ready(stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
    tokio::select! {
        biased;
        () = stop.as_mut() => true,
        () = std::future::ready(()) => false,
    }
}
