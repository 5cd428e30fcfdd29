// swift-tools-version: 6.1
import PackageDescription

/// System C libraries reached through module maps (headers from Debian's -dev packages).
func systemLibrary(_ name: String, pkgConfig: String? = nil, apt: [String]) -> Target {
    .systemLibrary(name: name, path: "Shared/\(name)", pkgConfig: pkgConfig, providers: [.apt(apt)])
}

let nio: [Target.Dependency] = [
    .product(name: "NIOCore", package: "swift-nio"),
    .product(name: "NIOPosix", package: "swift-nio"),
]

let package = Package(
    name: "Floe",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "floe", targets: ["floe"]),
        .executable(name: "floe-protocol-gen", targets: ["ProtocolGen"]),
        .executable(name: "floe-capture", targets: ["CaptureListener"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // MARK: C libraries
        .target(name: "CCRC32C", path: "Shared/CCRC32C"),
        systemLibrary("CZlib", apt: ["zlib1g-dev"]),
        systemLibrary("CSnappy", apt: ["libsnappy-dev"]),
        systemLibrary("CLZ4", pkgConfig: "liblz4", apt: ["liblz4-dev"]),
        systemLibrary("CZstd", pkgConfig: "libzstd", apt: ["libzstd-dev"]),
        systemLibrary("CCurl", pkgConfig: "libcurl", apt: ["libcurl4-openssl-dev"]),
        systemLibrary("CLibCrypto", pkgConfig: "libcrypto", apt: ["libssl-dev"]),
        systemLibrary("CSQLite", pkgConfig: "sqlite3", apt: ["libsqlite3-dev"]),

        // MARK: Shared libraries
        .target(
            name: "KafkaProtocol",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            path: "Shared/KafkaProtocol",
            exclude: ["Schemas"]
        ),
        .target(
            name: "KafkaRecords",
            dependencies: [
                "KafkaProtocol", "CCRC32C", "CZlib", "CSnappy", "CLZ4", "CZstd",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Shared/KafkaRecords"
        ),
        .target(
            name: "EventLoopTimers",
            dependencies: nio,
            path: "Shared/EventLoopTimers"
        ),
        .target(
            name: "KafkaTransport",
            dependencies: ["KafkaProtocol", "EventLoopTimers", .product(name: "Logging", package: "swift-log")] + nio,
            path: "Shared/KafkaTransport"
        ),
        .target(
            name: "Raft",
            dependencies: [.product(name: "DequeModule", package: "swift-collections")],
            path: "Shared/Raft"
        ),
        .target(
            name: "ObjectStorage",
            dependencies: [
                "CCurl", "CLibCrypto", "CCRC32C",
                .product(name: "Logging", package: "swift-log"),
            ] + nio,
            path: "Shared/ObjectStorage"
        ),

        .target(
            name: "ClusterMetadata",
            dependencies: ["KafkaProtocol", .product(name: "NIOCore", package: "swift-nio")],
            path: "Shared/ClusterMetadata",
            exclude: ["README.md"]
        ),

        .target(
            name: "ControllerClient",
            dependencies: [
                "EventLoopTimers", "KafkaProtocol", "KafkaTransport", "ClusterMetadata",
                .product(name: "Logging", package: "swift-log"),
            ] + nio,
            path: "Shared/ControllerClient"
        ),
        .target(
            name: "FloeService",
            dependencies: [
                "KafkaTransport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ] + nio,
            path: "Shared/FloeService"
        ),

        .target(
            name: "DevCluster",
            dependencies: ["FloeService", "KafkaTransport", .product(name: "Logging", package: "swift-log")],
            path: "Shared/DevCluster"
        ),

        // MARK: Services
        .target(
            name: "WALWriterCore",
            dependencies: [
                "KafkaRecords",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ] + nio,
            path: "Services/WALWriter/WALWriterCore"
        ),
        .target(
            name: "WALWriterService",
            dependencies: [
                "EventLoopTimers", "WALWriterCore", "KafkaProtocol", "KafkaTransport", "ObjectStorage", "ClusterMetadata", "ControllerClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ] + nio,
            path: "Services/WALWriter/WALWriterService"
        ),
        .executableTarget(
            name: "floe-wal-writer",
            dependencies: [
                "EventLoopTimers", "WALWriterService", "WALWriterCore", "ObjectStorage", "ClusterMetadata", "ControllerClient", "KafkaTransport", "FloeService",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Services/WALWriter/floe-wal-writer"
        ),
        .target(
            name: "BrokerCore",
            dependencies: [
                "EventLoopTimers", "KafkaProtocol", "KafkaRecords", "KafkaTransport", "ObjectStorage", "ClusterMetadata", "ControllerClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "OrderedCollections", package: "swift-collections"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ] + nio,
            path: "Services/Broker/BrokerCore"
        ),
        .executableTarget(
            name: "floe-broker",
            dependencies: [
                "EventLoopTimers", "BrokerCore", "ObjectStorage", "ClusterMetadata", "ControllerClient", "KafkaTransport", "FloeService",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Services/Broker/floe-broker"
        ),
        .target(
            name: "ControllerCore",
            dependencies: [
                "EventLoopTimers", "CSQLite", "Raft", "ClusterMetadata", "KafkaProtocol", "KafkaTransport", "ControllerClient", "FloeService",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ] + nio,
            path: "Services/Controller/ControllerCore"
        ),
        .executableTarget(
            name: "floe-controller",
            dependencies: [
                "ControllerCore", "ControllerClient", "FloeService",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Services/Controller/floe-controller"
        ),

        .target(
            name: "CompactorCore",
            dependencies: [
                "ObjectStorage", "ClusterMetadata", "ControllerClient", "KafkaRecords",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Services/Compactor/CompactorCore"
        ),
        .executableTarget(
            name: "floe-compactor",
            dependencies: [
                "CompactorCore", "ObjectStorage", "ClusterMetadata", "ControllerClient", "KafkaTransport", "FloeService",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Services/Compactor/floe-compactor"
        ),

        /// Seeded randomness for simulations, tests and repeatable benchmark inputs.
        .target(name: "Simulation", path: "Shared/Simulation"),

        // MARK: Tools
        .executableTarget(name: "ProtocolGen", path: "Tools/ProtocolGen"),
        .executableTarget(
            name: "floe",
            dependencies: [
                "KafkaProtocol", "KafkaRecords", "KafkaTransport", "FloeService", "DevCluster", "ControllerClient", "ClusterMetadata",
                "ObjectStorage", "Simulation", "CompactorCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ] + nio,
            path: "Tools/floe"
        ),

        // MARK: Tests
        // What tests share: seeded random, a manual clock, free ports, bounded waits, child processes.
        .target(name: "TestKit", dependencies: ["Simulation", .product(name: "Logging", package: "swift-log")], path: "Tests/TestKit"),
        .testTarget(name: "TestKitTests", dependencies: ["TestKit"], path: "Tests/TestKitTests"),
        .executableTarget(
            name: "CaptureListener",
            dependencies: ["KafkaProtocol", "KafkaTransport", .product(name: "Logging", package: "swift-log")] + nio,
            path: "Tests/CaptureListener"
        ),
        .testTarget(
            name: "KafkaProtocolTests",
            dependencies: ["TestKit", "KafkaProtocol", "KafkaRecords", .product(name: "NIOCore", package: "swift-nio")],
            path: "Tests/KafkaProtocolTests",
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "KafkaRecordsTests",
            dependencies: ["TestKit", "KafkaRecords", .product(name: "NIOCore", package: "swift-nio")],
            path: "Tests/KafkaRecordsTests",
            exclude: ["make_fixtures.py"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "KafkaTransportTests",
            dependencies: [
                "EventLoopTimers", "TestKit", "KafkaTransport", "KafkaProtocol", .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ] + nio,
            path: "Tests/KafkaTransportTests"
        ),
        .testTarget(
            name: "ObjectStorageTests",
            dependencies: ["TestKit", "ObjectStorage", "CCRC32C", .product(name: "Logging", package: "swift-log")] + nio,
            path: "Tests/ObjectStorageTests"
        ),
        .executableTarget(
            name: "wal-crash-helper",
            dependencies: [
                "WALWriterCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/WALCrashHelper"
        ),
        .testTarget(
            name: "WALWriterCoreTests",
            dependencies: [
                "TestKit", "WALWriterCore", "wal-crash-helper",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/WALWriterCoreTests"
        ),
        .testTarget(
            name: "ClusterMetadataTests",
            dependencies: ["TestKit", "ClusterMetadata", "KafkaProtocol", .product(name: "NIOCore", package: "swift-nio")],
            path: "Tests/ClusterMetadataTests"
        ),
        .testTarget(
            name: "ControllerTests",
            dependencies: [
                "TestKit", "ControllerCore", "ControllerClient", "ClusterMetadata", "Raft", "KafkaProtocol", "KafkaTransport", "FloeService",
                "DevCluster",
                .product(name: "Logging", package: "swift-log"),
            ] + nio,
            path: "Tests/ControllerTests"
        ),
        .testTarget(
            name: "FloeServiceTests",
            dependencies: [
                "FloeService", "KafkaTransport", "KafkaProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ] + nio,
            path: "Tests/FloeServiceTests"
        ),
        .executableTarget(
            name: "ServiceExample",
            dependencies: [
                "FloeService",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Tests/ServiceExample"
        ),
        .testTarget(
            name: "DevClusterTests",
            dependencies: ["TestKit", "DevCluster", "FloeService", .product(name: "Logging", package: "swift-log")] + nio,
            path: "Tests/DevClusterTests"
        ),
        .testTarget(
            name: "BrokerTests",
            dependencies: [
                "EventLoopTimers", "TestKit", "BrokerCore", "ControllerCore", "ControllerClient", "ClusterMetadata", "ObjectStorage", "KafkaProtocol",
                "KafkaRecords", "KafkaTransport", "FloeService", "DevCluster",
                .product(name: "Logging", package: "swift-log"),
            ] + nio,
            path: "Tests/BrokerTests"
        ),
        .testTarget(
            name: "WALWriterServiceTests",
            dependencies: [
                "TestKit", "WALWriterService", "WALWriterCore", "ControllerCore", "ControllerClient", "ClusterMetadata", "ObjectStorage",
                "KafkaProtocol", "KafkaTransport", "FloeService", "floe-wal-writer",
                .product(name: "Logging", package: "swift-log"),
            ] + nio,
            path: "Tests/WALWriterServiceTests"
        ),
        .testTarget(
            name: "DeployTests",
            dependencies: [
                "FloeService", "floe-controller", "floe-wal-writer", "floe-broker",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tests/DeployTests"
        ),
        .testTarget(
            name: "CompactorTests",
            dependencies: [
                "TestKit", "CompactorCore", "ClusterMetadata", "ObjectStorage", "KafkaProtocol", "KafkaRecords",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Tests/CompactorTests"
        ),
        .testTarget(
            name: "RaftTests",
            dependencies: ["TestKit", "Raft"],
            path: "Tests/RaftTests"
        ),
    ]
)
