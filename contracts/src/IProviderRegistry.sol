// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title What the escrow asks of the provider registry
interface IProviderRegistry {
    /// @notice Whether `provider` registered to take paid work (only registered providers are paid).
    function isRegistered(address provider) external view returns (bool);
}
