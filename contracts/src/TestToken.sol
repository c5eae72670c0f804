// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title gpumesh test token (GMT)
/// @notice An ERC-20 payment token for local networks and tests only.
/// @dev Anyone may mint any amount: never deploy this to a network where the token has value.
contract TestToken is ERC20 {
    constructor() ERC20("gpumesh test token", "GMT") {}

    /// @notice Mints `amount` new tokens to `to`. Open to every caller: a test token for local networks only.
    /// @param to The account that receives the new tokens.
    /// @param amount The number of tokens (18 decimals) to create.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
