/**
 * fast-check as every property test must use it. fast-check 4 draws lengths from a small default
 * size (about ten elements) even when an arbitrary names a larger `maxLength`, so a property over
 * "up to 3000 bytes" would never leave tiny inputs. With this setting an explicit `maxLength`
 * (or `maxDepth`) is the size drawn from; arbitraries without one keep the small default, so
 * nothing grows without a bound the test chose.
 */
import fc from 'fast-check';

fc.configureGlobal({ ...fc.readConfigureGlobal(), defaultSizeToMaxWhenMaxSpecified: true });

export default fc;
