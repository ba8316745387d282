//! The generated catalog: the same shape and seed always give the same rows, in
//! memory and in PostgreSQL alike.

use super::{Collection, Nft};

const ADJECTIVES: [&str; 16] = [
    "Bored", "Cosmic", "Pixel", "Neon", "Lazy", "Golden", "Cyber", "Mystic", "Tiny", "Wild",
    "Lunar", "Crypto", "Frozen", "Electric", "Hidden", "Royal",
];
const NOUNS: [&str; 16] = [
    "Apes", "Cats", "Punks", "Dragons", "Robots", "Kittens", "Wizards", "Foxes", "Turtles", "Owls",
    "Knights", "Whales", "Ghosts", "Tigers", "Pandas", "Frogs",
];

/// Size and seed of a generated catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogShape {
    /// Number of collections, ids 1..=collections.
    pub collections: u32,
    /// Number of NFTs, ids 1..=nfts, dealt round-robin over the collections.
    pub nfts: u32,
    /// Seed of names, addresses and ownership.
    pub seed: u64,
}

impl CatalogShape {
    /// Number of distinct owners: one for every eight NFTs.
    pub fn owners(&self) -> u64 {
        (u64::from(self.nfts) / 8).max(1)
    }

    /// Collection `id` (1-based), or `None` outside the catalog.
    pub fn collection(&self, id: i64) -> Option<Collection> {
        if id < 1 || id > i64::from(self.collections) {
            return None;
        }
        let h = mix(self.seed, id as u64);
        let adjective = ADJECTIVES[(h % 16) as usize];
        let noun = NOUNS[((h >> 8) % 16) as usize];
        let per = i64::from(self.nfts / self.collections);
        let extra = i64::from(id <= i64::from(self.nfts % self.collections));
        Some(Collection {
            id,
            name: format!("{adjective} {noun} {id}"),
            slug: format!("{}-{}-{id}", adjective.to_lowercase(), noun.to_lowercase()),
            contract: address(self.seed ^ 0xc0_11ec, id as u64),
            creator: self.owner(h),
            nft_count: per + extra,
            floor_price_wei: ((h >> 16) % 5_000 + 1).to_string() + "000000000000000",
        })
    }

    /// NFT `id` (1-based), or `None` outside the catalog.
    pub fn nft(&self, id: i64) -> Option<Nft> {
        if id < 1 || id > i64::from(self.nfts) {
            return None;
        }
        let collections = i64::from(self.collections);
        let collection_id = (id - 1) % collections + 1;
        let token_id = (id - 1) / collections + 1;
        Some(Nft {
            id,
            collection_id,
            token_id,
            name: format!("Token #{token_id}"),
            owner: self.owner(mix(self.seed ^ 0x0e_e4e4, id as u64)),
            image_url: format!("https://media.sandbox.invalid/{collection_id}/{token_id}.png"),
        })
    }

    /// NFT id of `token_id` in `collection_id`, if it exists.
    pub fn nft_id(&self, collection_id: i64, token_id: i64) -> Option<i64> {
        let id = (token_id - 1).checked_mul(i64::from(self.collections))? + collection_id;
        (collection_id >= 1
            && collection_id <= i64::from(self.collections)
            && token_id >= 1
            && id <= i64::from(self.nfts))
        .then_some(id)
    }

    fn owner(&self, h: u64) -> String {
        address(self.seed, h % self.owners())
    }
}

/// A 20-byte hex address derived from `(seed, n)`.
fn address(seed: u64, n: u64) -> String {
    format!("0x{:016x}{:08x}{:016x}", mix(seed, n), n as u32, mix(seed.rotate_left(17), n))
}

/// splitmix64 of `seed + x`: cheap, well spread, stable across versions.
fn mix(seed: u64, x: u64) -> u64 {
    let mut z = seed.wrapping_add(x.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: CatalogShape = CatalogShape { collections: 3, nfts: 10, seed: 7 };

    #[test]
    fn nfts_are_dealt_round_robin_and_counted_per_collection() {
        let counts: Vec<i64> = (1..=3).map(|id| SHAPE.collection(id).unwrap().nft_count).collect();
        assert_eq!(counts, [4, 3, 3]);
        let nft = SHAPE.nft(10).unwrap();
        assert_eq!((nft.collection_id, nft.token_id), (1, 4));
        assert_eq!(SHAPE.nft_id(1, 4), Some(10));
        assert_eq!(SHAPE.nft_id(2, 4), None);
        assert!(SHAPE.nft(11).is_none() && SHAPE.collection(0).is_none());
    }

    #[test]
    fn generation_is_deterministic_and_addresses_are_20_bytes() {
        assert_eq!(SHAPE.collection(2), SHAPE.collection(2));
        let owner = SHAPE.nft(3).unwrap().owner;
        assert_eq!(owner.len(), 42);
        assert!(owner[2..].chars().all(|c| c.is_ascii_hexdigit()));
    }
}
