# frozen_string_literal: true

# Builds the Rust extension at `gem install`. With the rb_sys gem installed
# its helpers write the Makefile; without it (RubyGems unreachable, say) a
# small Makefile runs cargo itself. Either way the result is
# nightmare/nightmare.so in the gem's extension directory.
require "mkmf"
require "rbconfig"

begin
  require "rb_sys/mkmf"
  create_rust_makefile("nightmare/nightmare")
rescue LoadError
  find_executable("cargo") or abort <<~MSG
    nightmare needs Rust's cargo to build its extension (Rust 1.85 or newer):
    install it from https://rustup.rs and run `gem install nightmare` again.
  MSG

  here = __dir__
  so_name = "nightmare.#{RbConfig::CONFIG['DLEXT']}"
  locked = File.exist?(File.join(here, "..", "..", "Cargo.lock")) ? "--locked" : ""
  File.write("Makefile", <<~MAKE)
    RUBY = #{RbConfig.ruby}
    CARGO ?= cargo
    TARGET_DIR = #{File.join(here, 'target')}
    sitearchdir = #{RbConfig::CONFIG['sitearchdir']}
    DESTDIR ?=

    all: #{so_name}

    #{so_name}:
    \tRUBY=$(RUBY) $(CARGO) build --release #{locked} --manifest-path #{File.join(here, 'Cargo.toml')} --target-dir $(TARGET_DIR)
    \tcp $(TARGET_DIR)/release/libnightmare.so #{so_name}

    # RubyGems never cleans after install: drop cargo's build tree (hundreds
    # of MB) once the library is in place.
    install: all
    \tmkdir -p $(DESTDIR)$(sitearchdir)/nightmare
    \tcp #{so_name} $(DESTDIR)$(sitearchdir)/nightmare/#{so_name}
    \trm -rf $(TARGET_DIR)

    clean:
    \trm -f #{so_name}

    .PHONY: all install clean
  MAKE
end
