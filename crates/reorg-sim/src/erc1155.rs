//! The ERC-1155 events the marketplace indexes (`TransferSingle`,
//! `TransferBatch`, `URI`), ABI-encoded and decoded with `alloy-sol-types`.

use alloy_primitives::{Address, B256, Bytes, LogData, U256};
use alloy_sol_types::{SolEvent, sol};

sol! {
    /// EIP-1155 single transfer (mint when `from` is zero, burn when `to` is zero).
    event TransferSingle(address indexed operator, address indexed from, address indexed to, uint256 id, uint256 value);
    /// EIP-1155 batch transfer.
    event TransferBatch(address indexed operator, address indexed from, address indexed to, uint256[] ids, uint256[] values);
    /// EIP-1155 metadata URI change.
    event URI(string value, uint256 indexed id);
}

/// One decoded ERC-1155 event of a collection (the contract emitting it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Erc1155Event {
    /// `TransferSingle` (`batch == false`) or `TransferBatch`: `ids[i]` moves `values[i]`.
    Transfer {
        /// The account that sent the transaction.
        operator: Address,
        /// Zero for a mint.
        from: Address,
        /// Zero for a burn.
        to: Address,
        /// Token ids.
        ids: Vec<U256>,
        /// Amounts, one per id.
        values: Vec<U256>,
        /// Emitted as `TransferBatch`.
        batch: bool,
    },
    /// `URI(value, id)`.
    Uri {
        /// Token id.
        id: U256,
        /// New metadata URI.
        value: String,
    },
}

impl Erc1155Event {
    /// The log data (topics and ABI data) of this event.
    pub fn encode(&self) -> LogData {
        match self {
            Erc1155Event::Transfer { operator, from, to, ids, values, batch: false }
                if ids.len() == 1 && values.len() == 1 =>
            {
                TransferSingle {
                    operator: *operator,
                    from: *from,
                    to: *to,
                    id: ids[0],
                    value: values[0],
                }
                .encode_log_data()
            }
            Erc1155Event::Transfer { operator, from, to, ids, values, .. } => TransferBatch {
                operator: *operator,
                from: *from,
                to: *to,
                ids: ids.clone(),
                values: values.clone(),
            }
            .encode_log_data(),
            Erc1155Event::Uri { id, value } => {
                URI { value: value.clone(), id: *id }.encode_log_data()
            }
        }
    }

    /// Decodes a log; `None` for logs that are not ERC-1155 events (other
    /// contracts' events are simply not ours) or that are malformed.
    pub fn decode(topics: &[B256], data: &[u8]) -> Option<Erc1155Event> {
        let first = topics.first()?;
        if *first == TransferSingle::SIGNATURE_HASH {
            let e = TransferSingle::decode_raw_log(topics.iter().copied(), data).ok()?;
            Some(Erc1155Event::Transfer {
                operator: e.operator,
                from: e.from,
                to: e.to,
                ids: vec![e.id],
                values: vec![e.value],
                batch: false,
            })
        } else if *first == TransferBatch::SIGNATURE_HASH {
            let e = TransferBatch::decode_raw_log(topics.iter().copied(), data).ok()?;
            if e.ids.len() != e.values.len() {
                return None;
            }
            Some(Erc1155Event::Transfer {
                operator: e.operator,
                from: e.from,
                to: e.to,
                ids: e.ids,
                values: e.values,
                batch: true,
            })
        } else if *first == URI::SIGNATURE_HASH {
            let e = URI::decode_raw_log(topics.iter().copied(), data).ok()?;
            Some(Erc1155Event::Uri { id: e.id, value: e.value })
        } else {
            None
        }
    }

    /// The token ids this event is about.
    pub fn token_ids(&self) -> Vec<U256> {
        match self {
            Erc1155Event::Transfer { ids, .. } => ids.clone(),
            Erc1155Event::Uri { id, .. } => vec![*id],
        }
    }
}

/// The topic0 values of the three events, for `eth_getLogs` topic filters.
pub fn event_signatures() -> [B256; 3] {
    [TransferSingle::SIGNATURE_HASH, TransferBatch::SIGNATURE_HASH, URI::SIGNATURE_HASH]
}

/// `data` as `Bytes` (helper for building logs).
pub fn bytes(data: &[u8]) -> Bytes {
    Bytes::copy_from_slice(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_log_data() {
        let a = Address::repeat_byte(1);
        let events = [
            Erc1155Event::Transfer {
                operator: a,
                from: Address::ZERO,
                to: a,
                ids: vec![U256::from(7)],
                values: vec![U256::from(3)],
                batch: false,
            },
            Erc1155Event::Transfer {
                operator: a,
                from: a,
                to: Address::repeat_byte(2),
                ids: vec![U256::from(1), U256::from(2)],
                values: vec![U256::from(5), U256::from(6)],
                batch: true,
            },
            Erc1155Event::Uri { id: U256::from(9), value: "ipfs://x/9.json".to_owned() },
        ];
        for event in events {
            let log = event.encode();
            assert_eq!(Erc1155Event::decode(log.topics(), &log.data), Some(event));
        }
    }

    #[test]
    fn transfer_single_topic_is_the_standard_one() {
        // keccak256("TransferSingle(address,address,address,uint256,uint256)")
        assert_eq!(
            TransferSingle::SIGNATURE_HASH.to_string(),
            "0xc3d58168c5ae7397731d063d5bbf3d657854427343f4c083240f7aacaa2d0f62"
        );
    }
}
