# frozen_string_literal: true

# Nightmare::Native, the Rust front: built for this Ruby by extconf.rb at gem
# install (or `rake compile` in a checkout), or carried prebuilt by the
# platform gem, one per Ruby minor (lib/nightmare/3.3/nightmare.so), since
# an extension is built against one minor's headers.
minor = RUBY_VERSION[/\A\d+\.\d+/]
prebuilt = File.join(__dir__, minor, "nightmare.so")
begin
  if File.exist?(prebuilt)
    require prebuilt
  else
    require "nightmare/nightmare"
  end
rescue LoadError => e
  carried = Dir[File.join(__dir__, "*", "nightmare.so")].map { |path| File.basename(File.dirname(path)) }.sort
  hint = if File.exist?(prebuilt)
           "the prebuilt one for Ruby #{minor} does not load here (a glibc older than 2.34?): install the source " \
             "gem, which builds it with Rust (gem install nightmare --platform ruby)"
         elsif carried.empty?
           "run `rake compile` in a checkout, or reinstall the gem"
         else
           "this gem carries it for Ruby #{carried.join(' and ')}, not #{minor}: install the source gem, which " \
             "builds it with Rust (gem install nightmare --platform ruby)"
         end
  raise LoadError, "nightmare's native extension is not built (#{e.message}): #{hint}"
end
