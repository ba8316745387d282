// SPDX-License-Identifier: Apache-2.0
// A minimal ERC-1155 collection for reorg-sim's anvil test: balances and the
// standard events (TransferSingle, TransferBatch, URI). Receiver hooks are left
// out: the test only moves tokens between externally owned accounts.
pragma solidity ^0.8.20;

contract MarketplaceItems {
    event TransferSingle(address indexed operator, address indexed from, address indexed to, uint256 id, uint256 value);
    event TransferBatch(address indexed operator, address indexed from, address indexed to, uint256[] ids, uint256[] values);
    event URI(string value, uint256 indexed id);

    mapping(uint256 => mapping(address => uint256)) public balanceOf;

    function mint(address to, uint256 id, uint256 value) external {
        balanceOf[id][to] += value;
        emit TransferSingle(msg.sender, address(0), to, id, value);
    }

    function mintBatch(address to, uint256[] calldata ids, uint256[] calldata values) external {
        require(ids.length == values.length, "length mismatch");
        for (uint256 i = 0; i < ids.length; i++) {
            balanceOf[ids[i]][to] += values[i];
        }
        emit TransferBatch(msg.sender, address(0), to, ids, values);
    }

    function safeTransferFrom(address from, address to, uint256 id, uint256 value, bytes calldata) external {
        require(from == msg.sender, "not owner");
        require(balanceOf[id][from] >= value, "insufficient balance");
        balanceOf[id][from] -= value;
        balanceOf[id][to] += value;
        emit TransferSingle(msg.sender, from, to, id, value);
    }

    function burn(address from, uint256 id, uint256 value) external {
        require(from == msg.sender, "not owner");
        require(balanceOf[id][from] >= value, "insufficient balance");
        balanceOf[id][from] -= value;
        emit TransferSingle(msg.sender, from, address(0), id, value);
    }

    function setURI(uint256 id, string calldata value) external {
        emit URI(value, id);
    }
}
