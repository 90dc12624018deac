# frozen_string_literal: true

# Packs the platform gem from the extensions script/native-gem built (one
# directory per Ruby minor under ARGV[0]) and the source gem beside it.
require "fileutils"
require "rubygems/package"

built = ARGV.fetch(0)
root = File.expand_path("..", __dir__)
Dir.chdir(root)
FileUtils.mkdir_p("pkg")

source = Gem::Specification.load("nightmare.gemspec")
source_gem = Gem::Package.build(source)
FileUtils.mv(source_gem, "pkg/#{source_gem}")

minors = Dir.children(built).select { |minor| File.file?(File.join(built, minor, "nightmare.so")) }.sort
abort "native-gem: no extension built under #{built}" if minors.empty?

staging = File.join(root, "tmp", "native-gem")
FileUtils.rm_rf(staging)
FileUtils.mkdir_p(staging)
source.files.each do |file|
  next if file.start_with?("ext/") || file.start_with?("Cargo.")

  FileUtils.mkdir_p(File.join(staging, File.dirname(file)))
  FileUtils.cp(file, File.join(staging, file))
end
libraries = minors.map do |minor|
  path = "lib/nightmare/#{minor}/nightmare.so"
  FileUtils.mkdir_p(File.join(staging, File.dirname(path)))
  FileUtils.cp(File.join(built, minor, "nightmare.so"), File.join(staging, path))
  path
end

platform = source.dup
platform.platform = Gem::Platform.new("x86_64-linux")
platform.extensions = []
platform.files = source.files.reject { |file| file.start_with?("ext/") || file.start_with?("Cargo.") } + libraries
newest = minors.last.split(".").map(&:to_i)
platform.required_ruby_version = [">= #{minors.first}", "< #{newest[0]}.#{newest[1] + 1}"]
Dir.chdir(staging) do
  file = Gem::Package.build(platform)
  FileUtils.mv(file, File.join(root, "pkg", file))
  puts "native-gem: pkg/#{file} (Ruby #{minors.join(', ')}) and pkg/#{source_gem} (built by cargo at install)"
end
