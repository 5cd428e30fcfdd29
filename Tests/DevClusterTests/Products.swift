import Foundation
import TestKit

/// Directory holding the package's built executables (ServiceExample among them).
func productsDirectory() -> String? {
    builtProduct("ServiceExample").map { URL(fileURLWithPath: $0).deletingLastPathComponent().path }
}
