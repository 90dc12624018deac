# frozen_string_literal: true

require_relative "lib/nightmare/version"

Gem::Specification.new do |spec|
  spec.name = "nightmare"
  spec.version = Nightmare::VERSION
  spec.summary = "Lets Unicorn face slow clients without nginx in front"
  spec.description = <<~TEXT
    A Rust front process, started by the Unicorn master with `nightmare true`,
    that buffers every request whole (heads, bodies to temp files) and hands
    it to an idle worker, so slowloris, slow uploads and slow readers never
    hold a worker.
  TEXT
  spec.authors = ["Nightmare! developers"]
  spec.license = "MIT"
  spec.required_ruby_version = ">= 3.1"

  spec.files = Dir[
    "lib/**/*.rb", "bin/*", "ext/**/*.{rb,rs,toml}", "Cargo.toml", "Cargo.lock",
    "examples/**/*", "README.md", "docs/**/*.md", "LICENSE"
  ].reject { |path| path.include?("/target/") || path.match?(%r{\Aexamples/localhost\.(pem|key)\z}) }
  spec.extensions = ["ext/nightmare/extconf.rb"]
  spec.bindir = "bin"
  spec.executables = ["nightmare"]
  spec.require_paths = ["lib"]

  # 6.0 reads clients with kgio (which it depends on); upstream's 6.1 and
  # later do not. Both are tested (see Nightmare::UnicornFlavor).
  spec.add_dependency "unicorn", ">= 6.0", "< 7"

  spec.add_development_dependency "minitest", "~> 5.15"
  spec.add_development_dependency "rack", ">= 2.2", "< 4"
  spec.add_development_dependency "rake", "~> 13.0"
end
