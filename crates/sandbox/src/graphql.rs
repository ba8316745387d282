//! `POST /graphql`: a small fixed schema over the catalog.
//!
//! ```graphql
//! type Query {
//!   collection(id: Int!): Collection
//!   collections(page: Int = 1, first: Int = 20): [Collection!]!
//!   nft(id: Int!): Nft
//!   owner(address: String!): Owner!
//!   search(text: String!, first: Int = 20): [Collection!]!
//! }
//! type Collection { id name slug contract creator nftCount floorPriceWei nfts(first: Int = 20): [Nft!]! }
//! type Nft { id tokenId name imageUrl owner: Owner! collection: Collection! }
//! type Owner { address nfts(first: Int = 20): [Nft!]! }
//! ```
//! Nested fields are resolved one lookup per parent, deliberately, so the N+1
//! pattern the DataLoader task removes is there to be measured
//! (`db_queries_total` per request).

use std::sync::Arc;

use async_graphql::{Context, EmptyMutation, EmptySubscription, Object, Result, Schema};

use crate::catalog::{Catalog, Collection, Nft};

/// The sandbox's GraphQL schema.
pub type MarketplaceSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// Largest page a client may ask for.
const MAX_FIRST: i32 = 100;

/// Builds the schema with depth and complexity limits.
pub fn schema(catalog: Arc<Catalog>) -> MarketplaceSchema {
    Schema::build(Query, EmptyMutation, EmptySubscription)
        .data(catalog)
        .limit_depth(8)
        .limit_complexity(20_000)
        .finish()
}

fn catalog<'a>(ctx: &Context<'a>) -> &'a Arc<Catalog> {
    ctx.data_unchecked::<Arc<Catalog>>()
}

fn page_size(first: i32) -> Result<u32> {
    if (1..=MAX_FIRST).contains(&first) {
        Ok(first as u32)
    } else {
        Err(format!("first must be between 1 and {MAX_FIRST}, got {first}").into())
    }
}

/// Root queries.
#[derive(Debug)]
pub struct Query;

#[Object]
impl Query {
    /// One collection by id.
    async fn collection(&self, ctx: &Context<'_>, id: i64) -> Result<Option<CollectionNode>> {
        Ok(catalog(ctx).collection(id).await?.map(CollectionNode))
    }

    /// A page of collections ordered by id.
    async fn collections(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 1)] page: i32,
        #[graphql(default = 20)] first: i32,
    ) -> Result<Vec<CollectionNode>> {
        let page = u32::try_from(page.max(1)).unwrap_or(1);
        Ok(catalog(ctx)
            .collections(page, page_size(first)?)
            .await?
            .into_iter()
            .map(CollectionNode)
            .collect())
    }

    /// One NFT by id.
    async fn nft(&self, ctx: &Context<'_>, id: i64) -> Result<Option<NftNode>> {
        Ok(catalog(ctx).nft(id).await?.map(NftNode))
    }

    /// An owner by address (lowercase hex).
    async fn owner(&self, address: String) -> OwnerNode {
        OwnerNode { address: address.to_lowercase() }
    }

    /// Collections whose name contains `text`.
    async fn search(
        &self,
        ctx: &Context<'_>,
        text: String,
        #[graphql(default = 20)] first: i32,
    ) -> Result<Vec<CollectionNode>> {
        Ok(catalog(ctx)
            .search(&text, page_size(first)?)
            .await?
            .into_iter()
            .map(CollectionNode)
            .collect())
    }
}

/// A collection.
#[derive(Debug)]
pub struct CollectionNode(Collection);

#[Object(name = "Collection")]
impl CollectionNode {
    async fn id(&self) -> i64 {
        self.0.id
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn slug(&self) -> &str {
        &self.0.slug
    }
    async fn contract(&self) -> &str {
        &self.0.contract
    }
    async fn creator(&self) -> OwnerNode {
        OwnerNode { address: self.0.creator.clone() }
    }
    async fn nft_count(&self) -> i64 {
        self.0.nft_count
    }
    async fn floor_price_wei(&self) -> &str {
        &self.0.floor_price_wei
    }
    /// The first NFTs of the collection: one query per collection.
    async fn nfts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> Result<Vec<NftNode>> {
        Ok(catalog(ctx)
            .collection_nfts(self.0.id, 1, page_size(first)?)
            .await?
            .into_iter()
            .map(NftNode)
            .collect())
    }
}

/// An NFT.
#[derive(Debug)]
pub struct NftNode(Nft);

#[Object(name = "Nft")]
impl NftNode {
    async fn id(&self) -> i64 {
        self.0.id
    }
    async fn token_id(&self) -> i64 {
        self.0.token_id
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn image_url(&self) -> &str {
        &self.0.image_url
    }
    async fn owner(&self) -> OwnerNode {
        OwnerNode { address: self.0.owner.clone() }
    }
    /// The NFT's collection: one query per NFT.
    async fn collection(&self, ctx: &Context<'_>) -> Result<CollectionNode> {
        catalog(ctx).collection(self.0.collection_id).await?.map(CollectionNode).ok_or_else(|| {
            format!("collection {} of nft {} is missing", self.0.collection_id, self.0.id).into()
        })
    }
}

/// An address holding NFTs.
#[derive(Debug)]
pub struct OwnerNode {
    address: String,
}

#[Object(name = "Owner")]
impl OwnerNode {
    async fn address(&self) -> &str {
        &self.address
    }
    /// NFTs held by this owner: one query per owner.
    async fn nfts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> Result<Vec<NftNode>> {
        Ok(catalog(ctx)
            .owner_nfts(&self.address, page_size(first)?)
            .await?
            .into_iter()
            .map(NftNode)
            .collect())
    }
}
